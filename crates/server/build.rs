//! The browser pages in `web/dist` are embedded in the binary (src/web.rs), so they must be built first:
//! `./x run`, `./x test` and `./x ci` do that (`npm ci && npm run build` in web/). A plain cargo build after
//! `npm ci` alone builds them here; with neither, the build stops and says what to run.

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let web = Path::new(&manifest_dir).join("../../web");
    // Re-embed whenever the built pages change (cargo scans the whole folder).
    println!("cargo::rerun-if-changed=../../web/dist");
    println!("cargo::rerun-if-changed=../../web/node_modules/.package-lock.json");
    let built = |web: &Path| web.join("dist/verify.html").is_file();
    if !built(&web) && web.join("node_modules/.package-lock.json").is_file() {
        let status = Command::new("node").arg("build.mjs").current_dir(&web).status();
        if !matches!(status, Ok(status) if status.success()) {
            println!("cargo::warning=`node build.mjs` in web/ failed: {status:?}");
        }
    }
    if !built(&web) {
        eprintln!(
            "\nerror: the browser pages are not built: web/dist/verify.html is missing.\n\
             custodia embeds web/dist in its binary. Build it with `./x run`, `./x test` or `./x ci`, which do it\n\
             for you, or by hand: (cd web && npm ci && npm run build). Node.js and npm come from\n\
             scripts/setup-system.sh run.\n"
        );
        std::process::exit(1);
    }
}
