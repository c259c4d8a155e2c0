//! `benchplot [FIGURES] [OUT.png]`: draws the benchmark figures the tests recorded (default
//! `target/bench-figures.txt`) into a PNG (default `docs/bench-figures.png`): clone latency
//! against template size, and the copy-on-write fault against the 4 KiB copy plus a null
//! hypercall it is held to, one colour per emulator. Build it with `--features png`.

use benchplot::{Section, parse};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the text font comes from unless `BENCHPLOT_FONT` names another (Debian's
/// fonts-dejavu-core).
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const WIDTH_PX: u32 = 1400;
const HEIGHT_PX: u32 = 560;
const SERIES_COLOURS: [RGBColor; 4] = [RGBColor(0xd6, 0x27, 0x28), RGBColor(0x1f, 0x77, 0xb4), RGBColor(0x2c, 0xa0, 0x2c), RGBColor(0x94, 0x67, 0xbd)];

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let figures = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/bench-figures.txt"));
    let out = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("docs/bench-figures.png"));
    match run(&figures, &out) {
        Ok(n) => {
            println!("benchplot: {} from {} ({n} emulator sections)", out.display(), figures.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchplot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A short name for a section's legend: the emulator's first word and the vendor, from labels
/// such as `QEMU TCG, AMD SVM+NPT, -icount (instructions)`.
fn legend(s: &Section) -> String {
    let parts: Vec<&str> = s.label.split(", ").collect();
    match parts.as_slice() {
        [emulator, vendor, ..] => {
            let vendor = vendor.split(" (").next().unwrap_or(vendor);
            format!("{} ({vendor})", emulator.split_whitespace().next().unwrap_or(emulator))
        }
        _ => s.label.clone(),
    }
}

fn load_font() -> Result<(), Failure> {
    let path = std::env::var("BENCHPLOT_FONT").unwrap_or_else(|_| DEFAULT_FONT.to_string());
    let bytes = std::fs::read(&path).map_err(|e| format!("font {path}: {e} (apt-get install fonts-dejavu-core, or set BENCHPLOT_FONT to a TTF)"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("font {path}: not a TrueType font"))?;
    Ok(())
}

fn run(figures: &Path, out: &Path) -> Result<usize, Failure> {
    let text = std::fs::read_to_string(figures).map_err(|e| format!("{}: {e}", figures.display()))?;
    let sections = parse(&text).map_err(|e| format!("{}: {e}", figures.display()))?;
    load_font()?;
    let root = BitMapBackend::new(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(WIDTH_PX * 11 / 20);
    clone_panel(&left, &sections)?;
    cow_panel(&right, &sections)?;
    root.present().map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(sections.len())
}

fn clone_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, sections: &[Section]) -> Result<(), Failure>
where
    DB::ErrorType: 'static,
{
    let with: Vec<(usize, &Section)> = sections.iter().enumerate().filter(|(_, s)| !s.clone_cycles.is_empty()).collect();
    let max_mib = with.iter().flat_map(|(_, s)| s.clone_cycles.iter().map(|p| p.0)).max().unwrap_or(1024).max(32);
    let max_cycles = with.iter().flat_map(|(_, s)| s.clone_cycles.iter().map(|p| p.1)).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption("Clone of a template, by template size", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d((8u64..max_mib * 2).log_scale(), 0u64..max_cycles * 5 / 4)?;
    chart.configure_mesh().x_desc("template size (MiB, log scale)").y_desc("cycles per clone (median)").label_style(("sans-serif", 15)).draw()?;
    for (i, s) in with {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        chart
            .draw_series(LineSeries::new(s.clone_cycles.iter().copied(), colour.stroke_width(3)))?
            .label(legend(s))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart.draw_series(s.clone_cycles.iter().map(|&p| Circle::new(p, 5, colour.filled())))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.9)).border_style(BLACK).label_font(("sans-serif", 16)).draw()?;
    Ok(())
}

fn cow_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, sections: &[Section]) -> Result<(), Failure>
where
    DB::ErrorType: 'static,
{
    let with: Vec<(usize, &Section)> = sections.iter().enumerate().filter(|(_, s)| s.cow.is_some()).collect();
    let max = with.iter().filter_map(|(_, s)| s.cow).map(|c| c.fault_cycles.max(c.copy_4k_cycles + c.null_hypercall_cycles)).max().unwrap_or(1).max(1);
    // Two bars per section: the fault, and the copy with the null hypercall stacked on it.
    let slots = (with.len() * 3).max(3) as u32;
    let names: Vec<String> = with.iter().map(|(_, s)| legend(s)).collect();
    let mut chart = ChartBuilder::on(area)
        .caption("Copy-on-write fault vs. its floor", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..slots, 0u64..max * 5 / 4)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots as usize)
        .x_label_formatter(&|x| if x % 3 == 1 { names.get((x / 3) as usize).cloned().unwrap_or_default() } else { String::new() })
        .y_desc("cycles")
        .label_style(("sans-serif", 15))
        .draw()?;
    let fault = SERIES_COLOURS[0];
    let (copy, null) = (SERIES_COLOURS[1], SERIES_COLOURS[2]);
    for (k, (_, s)) in with.iter().enumerate() {
        let Some(c) = s.cow else { continue };
        let x = k as u32 * 3;
        chart.draw_series([Rectangle::new([(x, 0), (x + 1, c.fault_cycles)], fault.filled())])?;
        chart.draw_series([Rectangle::new([(x + 1, 0), (x + 2, c.copy_4k_cycles)], copy.filled())])?;
        chart.draw_series([Rectangle::new([(x + 1, c.copy_4k_cycles), (x + 2, c.copy_4k_cycles + c.null_hypercall_cycles)], null.filled())])?;
    }
    // Legend entries for the three bar kinds.
    for (label, colour) in [("copy-on-write fault", fault), ("4 KiB copy", copy), ("+ null hypercall", null)] {
        chart
            .draw_series(std::iter::empty::<Rectangle<(u32, u64)>>())?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled()));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.9)).border_style(BLACK).label_font(("sans-serif", 16)).draw()?;
    Ok(())
}
