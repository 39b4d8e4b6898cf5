//! The page's files, compiled into the binary so that the dashboard works offline.

/// A file served under `/assets/`.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The dashboard page.
pub const DASHBOARD: &str = include_str!("assets/index.html");
/// The query page.
pub const QUERY: &str = include_str!("assets/query.html");

/// The asset named `name`, if there is one.
pub fn asset(name: &str) -> Option<Asset> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    let (content_type, body): (&str, &[u8]) = match name {
        "dashboard.js" => (JS, include_bytes!("assets/dashboard.js")),
        "query.js" => (JS, include_bytes!("assets/query.js")),
        "charts.js" => (JS, include_bytes!("assets/charts.js")),
        "style.css" => (CSS, include_bytes!("assets/style.css")),
        "uPlot.iife.min.js" => (JS, include_bytes!("assets/vendor/uPlot.iife.min.js")),
        "uPlot.min.css" => (CSS, include_bytes!("assets/vendor/uPlot.min.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}
