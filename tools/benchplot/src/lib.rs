//! The benchmark figures the tests record (`target/bench-figures.txt`, see `tests/src/lib.rs`
//! `record_figures`) read into the series `benchplot` draws: clone latency by template size
//! and the copy-on-write fault against the plain copy, one series per emulator section.
//!
//! The file is a run's record: sections headed `== LABEL`, each followed by the benchmark's
//! lines. It is read as outside input: a line that names a figure but does not carry it is an
//! error with its line number, not a point on a plot.

use std::fmt;

/// One emulator's (section's) figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// The section's heading, without `== `.
    pub label: String,
    /// `(template MiB, median cycles)` of `bench clone`, ascending by size.
    pub clone_cycles: Vec<(u64, u64)>,
    /// `bench cow`'s figures.
    pub cow: Option<CowFigures>,
}

/// The copy-on-write fault and what it is measured against (cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CowFigures {
    pub fault_cycles: u64,
    pub copy_4k_cycles: u64,
    pub null_hypercall_cycles: u64,
}

/// Why the figures could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FigureError {
    /// A figure line that does not carry its number (1-based line, what was missing).
    BadLine { line: usize, missing: &'static str },
    /// A figure before any `== ` heading.
    NoHeading { line: usize },
    /// No section with clone or copy-on-write figures.
    NothingToPlot,
}

impl fmt::Display for FigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FigureError::BadLine { line, missing } => write!(f, "line {line}: no {missing}"),
            FigureError::NoHeading { line } => write!(f, "line {line}: a figure before any `== ` section heading"),
            FigureError::NothingToPlot => write!(f, "no `bench clone` or `bench cow` figures (run the benchmarks first: ./boot/test.sh)"),
        }
    }
}

impl std::error::Error for FigureError {}

/// The unsigned number right after `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The sections of `text` that carry clone or copy-on-write figures. A label that appears
/// again (the file of several runs) keeps its last section.
pub fn parse(text: &str) -> Result<Vec<Section>, FigureError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<Section> = None;
    let close = |s: Option<Section>, sections: &mut Vec<Section>| {
        if let Some(s) = s.filter(|s| !s.clone_cycles.is_empty() || s.cow.is_some()) {
            sections.retain(|o| o.label != s.label);
            sections.push(s);
        }
    };
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if let Some(label) = line.strip_prefix("== ") {
            close(current.take(), &mut sections);
            current = Some(Section { label: label.trim().to_string(), ..Section::default() });
            continue;
        }
        let clone = line.starts_with("bench clone: ") && line.contains(" MiB template: median ");
        let cow = line.starts_with("bench cow: ");
        if !clone && !cow {
            continue;
        }
        let Some(s) = current.as_mut() else { return Err(FigureError::NoHeading { line: line_no }) };
        let bad = |missing| FigureError::BadLine { line: line_no, missing };
        if clone {
            let mib = number_after(line, "bench clone: ").ok_or(bad("template size"))?;
            let cycles = number_after(line, "median ").ok_or(bad("median"))?;
            s.clone_cycles.retain(|&(m, _)| m != mib);
            s.clone_cycles.push((mib, cycles));
            s.clone_cycles.sort_unstable();
        } else {
            s.cow = Some(CowFigures {
                fault_cycles: number_after(line, "cow-fault cycles=").ok_or(bad("cow-fault cycles"))?,
                copy_4k_cycles: number_after(line, "copy4k cycles=").ok_or(bad("copy4k cycles"))?,
                null_hypercall_cycles: number_after(line, "null-hypercall cycles=").ok_or(bad("null-hypercall cycles"))?,
            });
        }
    }
    close(current.take(), &mut sections);
    if sections.is_empty() {
        return Err(FigureError::NothingToPlot);
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "\
== QEMU TCG, AMD SVM+NPT, -icount (instructions)
bench cow: cowbench: cow-fault cycles=1446 copy4k cycles=521 null-hypercall cycles=478 ratio=1.44 (target <= 2.00) n=256
bench clone: 256 MiB template: median 21153 min 20406 cycles (n=10)
bench clone: 16 MiB template: median 19758 min 19071 cycles (n=10)
bench clone: 1024 MiB vs 16 MiB template: 1.27x (target <= 1.50)
bench clone: 1024 MiB template: median 25275 min 24588 cycles (n=10)
== QEMU TCG, AMD SVM+NPT, -icount (instructions): lazy restore
bench lazy start: first instruction of a lazy restore 16 MiB 93043 cycles
== Bochs, Intel VMX+EPT (instructions)
bench clone: 16 MiB template: median 20270 min 19998 cycles (n=5)
";

    #[test]
    fn clone_series_come_per_section_sorted_by_size_and_sections_without_figures_are_dropped() {
        let s = parse(RUN).unwrap();
        assert_eq!(s.len(), 2, "{s:#?}");
        assert_eq!(s[0].label, "QEMU TCG, AMD SVM+NPT, -icount (instructions)");
        assert_eq!(s[0].clone_cycles, vec![(16, 19758), (256, 21153), (1024, 25275)], "the ratio line is not a point");
        assert_eq!(s[0].cow, Some(CowFigures { fault_cycles: 1446, copy_4k_cycles: 521, null_hypercall_cycles: 478 }));
        assert_eq!(s[1].clone_cycles, vec![(16, 20270)]);
        assert_eq!(s[1].cow, None);
    }

    #[test]
    fn a_later_run_of_the_same_section_replaces_the_earlier() {
        let twice = format!("{RUN}== Bochs, Intel VMX+EPT (instructions)\nbench clone: 16 MiB template: median 111 min 100 cycles (n=5)\n");
        let s = parse(&twice).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].clone_cycles, vec![(16, 111)]);
    }

    #[test]
    fn a_figure_line_without_its_number_or_heading_is_refused_with_its_line() {
        let cut = "== x\nbench cow: cowbench: cow-fault cycles=1446 copy4k cycles=\n";
        assert_eq!(parse(cut), Err(FigureError::BadLine { line: 2, missing: "copy4k cycles" }));
        let orphan = "bench clone: 16 MiB template: median 5 min 4 cycles\n";
        assert_eq!(parse(orphan), Err(FigureError::NoHeading { line: 1 }));
        assert_eq!(parse("== only a heading\nsomething else\n"), Err(FigureError::NothingToPlot));
        assert_eq!(parse(""), Err(FigureError::NothingToPlot));
    }
}
