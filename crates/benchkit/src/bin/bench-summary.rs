//! Prints the headline figures that the benchmarks of one `./x bench` added to the file named by
//! `CUSTODIA_BENCH_SUMMARY` as one table: each figure beside its peer or limit from the same run, and the ratio.
#![allow(clippy::print_stdout)]

fn main() -> std::io::Result<()> {
    let path = std::env::var_os(custodia_benchkit::SUMMARY_ENV)
        .ok_or_else(|| std::io::Error::other(format!("{} is not set", custodia_benchkit::SUMMARY_ENV)))?;
    let text = std::fs::read_to_string(path)?;
    println!("\n== custodia benchmarks: summary ==");
    custodia_benchkit::summary_table(&text).print();
    Ok(())
}
