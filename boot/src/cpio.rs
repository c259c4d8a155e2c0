//! A writer (and, for checks, a reader) of the cpio "newc" format the Linux kernel unpacks as
//! its initramfs: each member is a 110-byte ASCII header (magic `070701`, then thirteen 8-digit
//! hex fields), the NUL-terminated name padded to 4 bytes, and the data padded to 4 bytes; the
//! archive ends with a member named `TRAILER!!!`.
//!
//! Names are written without a leading `/` (the kernel takes them relative to its root);
//! owners are root, modification times 0, so the same inputs give the same bytes.

/// Magic of a newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// Bytes of a newc header.
pub const HEADER_BYTES: usize = 110;
/// Name of the last member.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;

/// One member's header fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    /// Type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub devmajor: u32,
    pub devminor: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Appends the header and padded name of one member (the data follows).
pub fn write_header(out: &mut Vec<u8>, name: &str, h: &Header) {
    let namesize = name.len() as u32 + 1;
    out.extend_from_slice(MAGIC);
    for v in [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        h.devmajor,
        h.devminor,
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0, // check: only for the 070702 (crc) variant
    ] {
        out.extend_from_slice(format!("{v:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Why a member could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// Empty, NUL-containing, `.`/`..` component, or the trailer's name.
    BadName(String),
    /// Given twice.
    Duplicate(String),
    /// Larger than the format's 4 GiB.
    TooLarge(String),
}

impl std::fmt::Display for CpioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadName(n) => write!(f, "bad cpio member name {n:?}"),
            Self::Duplicate(n) => write!(f, "cpio member {n:?} given twice"),
            Self::TooLarge(n) => write!(f, "cpio member {n:?} is larger than 4 GiB"),
        }
    }
}

/// Builds a newc archive in memory.
#[derive(Debug, Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    names: std::collections::BTreeSet<String>,
    next_ino: u32,
}

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self { out: Vec::new(), names: Default::default(), next_ino: 1 }
    }

    fn member(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> Result<(), CpioError> {
        let name = path.trim_start_matches('/').to_string();
        if name.is_empty()
            || name.contains('\0')
            || name == TRAILER
            || name.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CpioError::BadName(path.to_string()));
        }
        let filesize = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.to_string()))?;
        if !self.names.insert(name.clone()) {
            return Err(CpioError::Duplicate(path.to_string()));
        }
        let h = Header {
            ino: self.next_ino,
            mode,
            nlink,
            filesize,
            rdevmajor: rdev.0,
            rdevminor: rdev.1,
            ..Header::default()
        };
        self.next_ino += 1;
        write_header(&mut self.out, &name, &h);
        self.out.extend_from_slice(data);
        pad4(&mut self.out);
        Ok(())
    }

    /// A directory with permission bits `perm` (e.g. `0o755`). Add parents first.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<&mut Self, CpioError> {
        self.member(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])?;
        Ok(self)
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<&mut Self, CpioError> {
        self.member(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)?;
        Ok(self)
    }

    /// A symbolic link to `target` (its data is the target text).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, CpioError> {
        self.member(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())?;
        Ok(self)
    }

    /// A character device node `major:minor` with permission bits `perm`.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<&mut Self, CpioError> {
        self.member(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])?;
        Ok(self)
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        write_header(&mut self.out, TRAILER, &Header { nlink: 1, ..Header::default() });
        self.out
    }
}

/// One member of a parsed archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub header: Header,
    pub data: Vec<u8>,
}

impl Member {
    /// The file type bits of the mode.
    pub fn file_type(&self) -> u32 {
        self.header.mode & S_IFMT
    }

    /// The permission bits of the mode.
    pub fn perm(&self) -> u32 {
        self.header.mode & 0o7777
    }
}

/// Parses a newc archive up to its trailer (to check what was written).
pub fn parse(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let mut at = 0usize;
    let mut members = Vec::new();
    let align = |n: usize| n.div_ceil(4) * 4;
    loop {
        let head = bytes.get(at..at + HEADER_BYTES).ok_or_else(|| format!("truncated header at {at}"))?;
        if &head[..6] != MAGIC {
            return Err(format!("bad magic at {at}"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let text = std::str::from_utf8(&head[6 + 8 * i..14 + 8 * i]).map_err(|_| format!("bad field at {at}"))?;
            *v = u32::from_str_radix(text, 16).map_err(|_| format!("bad field {text:?} at {at}"))?;
        }
        let namesize = f[11] as usize;
        let name_at = at + HEADER_BYTES;
        let name_bytes = bytes.get(name_at..name_at + namesize).ok_or_else(|| format!("truncated name at {at}"))?;
        if namesize == 0 || name_bytes[namesize - 1] != 0 {
            return Err(format!("name not NUL-terminated at {at}"));
        }
        let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).map_err(|_| format!("bad name at {at}"))?;
        let data_at = align(name_at + namesize);
        let size = f[6] as usize;
        let data = bytes.get(data_at..data_at + size).ok_or_else(|| format!("truncated data of {name}"))?.to_vec();
        at = align(data_at + size);
        if name == TRAILER {
            return Ok(members);
        }
        let header = Header {
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            filesize: f[6],
            devmajor: f[7],
            devminor: f[8],
            rdevmajor: f[9],
            rdevminor: f[10],
        };
        members.push(Member { name, header, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_of_a_known_file_matches_bytes_computed_by_hand() {
        let mut w = CpioWriter::new();
        w.file("/etc/hostname", 0o644, b"linux\n").unwrap();
        let bytes = w.finish();
        let expected_header = concat!(
            "070701", "00000001", // ino
            "000081A4", // mode 0100644
            "00000000", // uid
            "00000000", // gid
            "00000001", // nlink
            "00000000", // mtime
            "00000006", // filesize
            "00000000", // devmajor
            "00000000", // devminor
            "00000000", // rdevmajor
            "00000000", // rdevminor
            "0000000D", // namesize: "etc/hostname" + NUL = 13
            "00000000", // check
        );
        assert_eq!(&bytes[..HEADER_BYTES], expected_header.as_bytes());
        // 110 + 13 = 123, padded to 124; then 6 data bytes padded to 8.
        assert_eq!(&bytes[110..124], b"etc/hostname\0\0");
        assert_eq!(&bytes[124..132], b"linux\n\0\0");
        assert_eq!(&bytes[132..138], MAGIC);
    }

    #[test]
    fn archive_ends_with_trailer_padded_to_4() {
        let mut w = CpioWriter::new();
        w.dir("bin", 0o755).unwrap().file("bin/x", 0o755, b"abc").unwrap();
        let bytes = w.finish();
        assert_eq!(bytes.len() % 4, 0);
        // Trailer header: 110 bytes + "TRAILER!!!\0" (11) = 121, padded to 124.
        let trailer = &bytes[bytes.len() - 124..];
        assert_eq!(&trailer[..6], MAGIC);
        assert_eq!(&trailer[6 + 8 * 11..6 + 8 * 12], b"0000000B");
        assert_eq!(&trailer[110..124], b"TRAILER!!!\0\0\0\0");
    }

    #[test]
    fn every_member_kind_round_trips_with_mode_and_device_numbers() {
        let mut w = CpioWriter::new();
        w.dir("/dev", 0o755)
            .unwrap()
            .char_device("/dev/ttyS0", 0o600, 4, 64)
            .unwrap()
            .symlink("/dev/stdout", "/proc/self/fd/1")
            .unwrap()
            .file("/dev/readme", 0o644, b"12345")
            .unwrap();
        let m = parse(&w.finish()).unwrap();
        assert_eq!(
            m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["dev", "dev/ttyS0", "dev/stdout", "dev/readme"]
        );
        assert_eq!((m[0].file_type(), m[0].perm(), m[0].header.nlink), (S_IFDIR, 0o755, 2));
        assert_eq!((m[1].file_type(), m[1].perm()), (S_IFCHR, 0o600));
        assert_eq!((m[1].header.rdevmajor, m[1].header.rdevminor), (4, 64));
        assert_eq!(m[2].file_type(), S_IFLNK);
        assert_eq!(m[2].data, b"/proc/self/fd/1");
        assert_eq!((m[3].file_type(), m[3].perm()), (S_IFREG, 0o644));
        assert_eq!(m[3].data, b"12345");
        let inos: std::collections::BTreeSet<u32> = m.iter().map(|m| m.header.ino).collect();
        assert_eq!(inos.len(), 4, "inode numbers are unique");
    }

    #[test]
    fn bad_and_duplicate_names_are_refused() {
        let mut w = CpioWriter::new();
        for bad in ["", "/", "a//b", "a/../b", "./a", "TRAILER!!!", "a\0b"] {
            assert!(matches!(w.file(bad, 0o644, b""), Err(CpioError::BadName(_))), "{bad:?}");
        }
        w.file("a", 0o644, b"").unwrap();
        assert!(matches!(w.file("/a", 0o644, b""), Err(CpioError::Duplicate(_))));
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let make = || {
            let mut w = CpioWriter::new();
            w.dir("d", 0o755).unwrap().file("d/f", 0o600, b"x").unwrap();
            w.finish()
        };
        assert_eq!(make(), make());
    }
}
