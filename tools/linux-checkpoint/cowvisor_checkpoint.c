// SPDX-License-Identifier: GPL-2.0
/*
 * cowvisor_checkpoint: /dev/checkpoint for a Linux guest of cowvisor
 * (docs/self-checkpoint.md). The kernel side of a self-checkpoint: the
 * hypercalls a process cannot make (they are refused at CPL 3) and the
 * producer end of the guest's channel ring to dom0.
 *
 *   ioctl(CKPT_TAKE)         self_checkpoint(): 0 now, 1 in a restored domain
 *   pread(fd, buf, n, gpa)   pages of the checkpoint (its own epoch only)
 *   ioctl(CKPT_BEGIN, tag)   a stream to dom0 (image NAME.TAG)
 *   ioctl(CKPT_PAGE, &page)  one page {gpa, user buffer} onto the ring
 *   ioctl(CKPT_END)          END; waits for dom0's answer, returns its status
 *   ioctl(CKPT_FINISH)       self_checkpoint_end()
 *   ioctl(CKPT_MEMSIZE, &n)  the domain's memory in bytes
 *
 * Everything the hypervisor answers is checked there; this module only
 * keeps the ring's producer side consistent for one process at a time.
 */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/io.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>
#include <linux/jiffies.h>
#include <linux/timekeeping.h>

#define NR_YIELD 3
#define NR_CHANNEL_OPEN 16
#define NR_CHANNEL_NOTIFY 17
#define NR_SELF_CHECKPOINT 18
#define NR_SELF_CHECKPOINT_READ 19
#define NR_SELF_CHECKPOINT_END 20

#define HV_NOT_PERMITTED 1
#define HV_BAD_ADDRESS 3
#define HV_BUSY 6
#define HV_WRONG_STATE 8

#define RING_MAGIC 0x314e4843u /* "CHN1" */
#define RING_SLOTS 32u
#define RING_ORDER 6           /* 64 pages: the header and 32 slots fit */
#define OFF_MAGIC 0
#define OFF_SLOTS 4
#define OFF_PROD 8
#define OFF_CONS 12
#define OFF_STATUS 16
#define OFF_DESC0 64
#define MSG_BEGIN 1
#define MSG_PAGE 2
#define MSG_END 3
#define TAG_MAX 24
#define READ_MAX_PAGES 16
#define ANSWER_WAIT_MS 60000

#define START_INFO_GPA 0x1000
#define SI_CALL_INSN 28
#define SI_MEM_BYTES 40

struct ckpt_page {
	__u64 gpa;
	__u64 buf;
};

#define CKPT_TAKE _IO('C', 1)
#define CKPT_BEGIN _IOW('C', 2, char[TAG_MAX])
#define CKPT_PAGE _IOW('C', 3, struct ckpt_page)
#define CKPT_END _IO('C', 4)
#define CKPT_FINISH _IO('C', 5)
#define CKPT_MEMSIZE _IOR('C', 6, __u64)

static DEFINE_MUTEX(ckpt_lock);
static struct page *ring_pages;
static u8 *ring;
static u8 *bounce;
static u32 prod, sent;
/* Where a stream's time went: waits for room on the ring, and the yields in them. */
static u64 full_waits, yields, waited_ns;
static bool vmmcall;
static u64 mem_bytes;

static long hc(u64 nr, u64 a0, u64 a1, u64 a2)
{
	u64 ret;

	if (vmmcall)
		asm volatile("vmmcall" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1), "d"(a2) : "memory");
	else
		asm volatile("vmcall" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1), "d"(a2) : "memory");
	return (long)ret;
}

/* The hypervisor's errors as errno values. */
static long hv_errno(long r)
{
	switch (-r) {
	case HV_NOT_PERMITTED: return -EPERM;
	case HV_BAD_ADDRESS: return -ENXIO;
	case HV_BUSY: return -EBUSY;
	case HV_WRONG_STATE: return -ENOENT;
	default: return -EIO;
	}
}

static u32 rd(unsigned int off) { return READ_ONCE(*(u32 *)(ring + off)); }
static void wr(unsigned int off, u32 v) { WRITE_ONCE(*(u32 *)(ring + off), v); }
static u8 *slot(u32 i) { return ring + (1 + i % RING_SLOTS) * PAGE_SIZE; }

static void put_desc(u32 kind, u32 len, u64 arg)
{
	u8 *d = ring + OFF_DESC0 + (prod % RING_SLOTS) * 16;

	*(u32 *)d = kind;
	*(u32 *)(d + 4) = len;
	*(u64 *)(d + 8) = arg;
	prod++;
	smp_wmb();
	wr(OFF_PROD, prod);
	/*
	 * dom0 waits only on an empty ring, and reads the producer index again after it writes
	 * the consumer index: a notify is needed only when this message went into an empty
	 * ring (the store of prod before the load of cons, hence the full barrier). A page
	 * among others costs no exit.
	 */
	smp_mb();
	if (kind != MSG_PAGE || prod - rd(OFF_CONS) == 1)
		hc(NR_CHANNEL_NOTIFY, 0, 0, 0);
}

/*
 * Gives the CPU to dom0 (it was told by channel_notify) instead of sleeping: a sleep costs
 * a timer round trip per ring's worth of pages, a yield one switch there and back.
 */
static void let_dom0_run(void)
{
	hc(NR_CHANNEL_NOTIFY, 0, 0, 0);
	hc(NR_YIELD, 0, 0, 0);
	cond_resched();
}

/* Waits for a free slot; a status already written means dom0 refused the stream. */
static long wait_room(void)
{
	unsigned long until = jiffies + msecs_to_jiffies(ANSWER_WAIT_MS);
	u64 t0;

	if (prod - rd(OFF_CONS) < RING_SLOTS)
		return rd(OFF_STATUS) ? -EPROTO : 0;
	full_waits++;
	t0 = ktime_get_ns();
	while (prod - rd(OFF_CONS) >= RING_SLOTS) {
		if (rd(OFF_STATUS))
			return -EPROTO;
		let_dom0_run();
		yields++;
		if (time_after(jiffies, until))
			return -ETIMEDOUT;
	}
	waited_ns += ktime_get_ns() - t0;
	return rd(OFF_STATUS) ? -EPROTO : 0;
}

static long take(void)
{
	long r;

	/* (Re)registers the ring: dom0 may have allowed the channel after boot. */
	r = hc(NR_CHANNEL_OPEN, page_to_phys(ring_pages), 1 + RING_SLOTS, 0);
	if (r < 0)
		return hv_errno(r);
	r = hc(NR_SELF_CHECKPOINT, 0, 0, 0);
	return r < 0 ? hv_errno(r) : r;
}

static long begin(const char __user *utag)
{
	char tag[TAG_MAX + 1] = { 0 };
	size_t len;
	long r;

	if (copy_from_user(tag, utag, TAG_MAX))
		return -EFAULT;
	len = strnlen(tag, TAG_MAX);
	if (!len)
		return -EINVAL;
	/* A new stream: everything before is consumed, no answer yet. */
	wr(OFF_STATUS, 0);
	prod = rd(OFF_CONS);
	wr(OFF_PROD, prod);
	sent = 0;
	full_waits = yields = waited_ns = 0;
	r = wait_room();
	if (r)
		return r;
	memcpy(slot(prod), tag, len);
	put_desc(MSG_BEGIN, len, mem_bytes);
	return 0;
}

static long send_page(const struct ckpt_page __user *up)
{
	struct ckpt_page p;
	long r;

	if (copy_from_user(&p, up, sizeof(p)))
		return -EFAULT;
	r = wait_room();
	if (r)
		return r;
	if (copy_from_user(slot(prod), (const void __user *)p.buf, PAGE_SIZE))
		return -EFAULT;
	put_desc(MSG_PAGE, PAGE_SIZE, p.gpa);
	sent++;
	return 0;
}

static long end(void)
{
	unsigned long until = jiffies + msecs_to_jiffies(ANSWER_WAIT_MS);
	long r = wait_room();

	if (r && r != -EPROTO)
		return r;
	if (!r)
		put_desc(MSG_END, 0, sent);
	while (!rd(OFF_STATUS)) {
		let_dom0_run();
		if (time_after(jiffies, until))
			return -ETIMEDOUT;
	}
	pr_info("cowvisor_checkpoint: %u pages sent, %llu waits for room (%llu yields, %llu ms)\n",
		sent, full_waits, yields, waited_ns / NSEC_PER_MSEC);
	return rd(OFF_STATUS);
}

static long ckpt_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	long r;

	mutex_lock(&ckpt_lock);
	switch (cmd) {
	case CKPT_TAKE: r = take(); break;
	case CKPT_BEGIN: r = begin((const char __user *)arg); break;
	case CKPT_PAGE: r = send_page((const struct ckpt_page __user *)arg); break;
	case CKPT_END: r = end(); break;
	case CKPT_FINISH:
		r = hc(NR_SELF_CHECKPOINT_END, 0, 0, 0);
		r = r < 0 ? hv_errno(r) : 0;
		break;
	case CKPT_MEMSIZE:
		r = put_user(mem_bytes, (__u64 __user *)arg) ? -EFAULT : 0;
		break;
	default: r = -ENOTTY;
	}
	mutex_unlock(&ckpt_lock);
	return r;
}

/* pread: pages of the checkpoint at guest-physical offset *pos. */
static ssize_t ckpt_read(struct file *f, char __user *buf, size_t n, loff_t *pos)
{
	size_t done = 0;
	long r = 0;

	if (*pos % PAGE_SIZE || n % PAGE_SIZE)
		return -EINVAL;
	mutex_lock(&ckpt_lock);
	while (done < n) {
		u64 pages = min_t(u64, (n - done) / PAGE_SIZE, READ_MAX_PAGES);

		r = hc(NR_SELF_CHECKPOINT_READ, *pos, virt_to_phys(bounce), pages);
		if (r < 0) {
			r = hv_errno(r);
			break;
		}
		if (copy_to_user(buf + done, bounce, pages * PAGE_SIZE)) {
			r = -EFAULT;
			break;
		}
		done += pages * PAGE_SIZE;
		*pos += pages * PAGE_SIZE;
	}
	mutex_unlock(&ckpt_lock);
	return done ? done : r;
}

static const struct file_operations ckpt_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = ckpt_ioctl,
	.read = ckpt_read,
	.llseek = default_llseek,
};

static struct miscdevice ckpt_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "checkpoint",
	.fops = &ckpt_fops,
	.mode = 0600,
};

static int __init ckpt_init(void)
{
	void *si = memremap(START_INFO_GPA, PAGE_SIZE, MEMREMAP_WB);
	struct page *b;
	int r;

	if (!si)
		return -ENODEV;
	vmmcall = *(u32 *)(si + SI_CALL_INSN) == 1;
	mem_bytes = *(u64 *)(si + SI_MEM_BYTES);
	memunmap(si);
	ring_pages = alloc_pages(GFP_KERNEL | __GFP_ZERO, RING_ORDER);
	b = alloc_pages(GFP_KERNEL, get_order(READ_MAX_PAGES * PAGE_SIZE));
	if (!ring_pages || !b) {
		if (ring_pages)
			__free_pages(ring_pages, RING_ORDER);
		if (b)
			__free_pages(b, get_order(READ_MAX_PAGES * PAGE_SIZE));
		return -ENOMEM;
	}
	ring = page_address(ring_pages);
	bounce = page_address(b);
	wr(OFF_MAGIC, RING_MAGIC);
	wr(OFF_SLOTS, RING_SLOTS);
	r = misc_register(&ckpt_dev);
	if (r) {
		__free_pages(ring_pages, RING_ORDER);
		__free_pages(b, get_order(READ_MAX_PAGES * PAGE_SIZE));
		return r;
	}
	pr_info("cowvisor_checkpoint: /dev/checkpoint (%llu MiB domain)\n", mem_bytes >> 20);
	return 0;
}

static void __exit ckpt_exit(void)
{
	hc(NR_CHANNEL_OPEN, 0, 0, 0);
	misc_deregister(&ckpt_dev);
	__free_pages(ring_pages, RING_ORDER);
	__free_pages(virt_to_page(bounce), get_order(READ_MAX_PAGES * PAGE_SIZE));
}

module_init(ckpt_init);
module_exit(ckpt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("cowvisor self-checkpoint device");
