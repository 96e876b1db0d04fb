//! The status page at `/patchpull/ui`: read-only HTML, rendered here from the same job
//! list as the admin API, behind the same token (a browser sends it as the password of
//! Basic credentials; the 401 asks for them). No script, no external asset: one page that
//! works in any browser and in `chromium --headless --dump-dom`. Every piece of text that
//! comes from an image, an upstream or an error is HTML-escaped by [`escape`].

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use super::body::{self, Body};
use super::respond::error_response;
use super::AppState;
use crate::pipeline::JobView;

/// Where the page is served.
pub const PATH: &str = "/patchpull/ui";

/// An upstream whose last answer is older than this is shown as not asked recently.
const RECENT: Duration = Duration::from_secs(600);

pub async fn handle<B>(state: &AppState, req: &Request<B>) -> Response<Body> {
    if let Err(e) = super::admin::authorize(state, req.headers()) {
        let mut response = error_response(req.method(), &e);
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"patchpull\", charset=\"UTF-8\""),
            );
        }
        return response;
    }
    let sandbox = tokio::task::spawn_blocking(crate::patch::sandbox::available)
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let html = render(state, &state.pipeline.jobs().list(), &sandbox);
    let mut response = Response::new(body::full(Bytes::from(html)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing on the page runs or loads anything.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

/// `text` safe inside HTML elements and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `sha256:0123456789ab`: enough to tell images apart on a screen; the full digest is the
/// cell's title.
fn short(digest: &str) -> String {
    let end = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..end).unwrap_or(digest).to_owned()
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(String::new, |s| format!("{s:.1} s"))
}

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;margin:24px;color:#222}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px}\
table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}\
th{background:#f0f0f0}code{font-family:'DejaVu Sans Mono',monospace;font-size:12px}\
.patched{color:#106b21}.failed{color:#a31515}.running,.queued{color:#8a5a00}\
.unchanged{color:#555}.ok{color:#106b21}.bad{color:#a31515}.muted{color:#777}\
.summary span{margin-right:18px;font-weight:bold}.cves,.package,code{white-space:nowrap}";

fn render(state: &AppState, jobs: &[JobView], sandbox: &Result<(), String>) -> String {
    let mut page = String::new();
    let count = |status: &str| jobs.iter().filter(|j| j.status == status).count();
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>patchpull status</title><style>{STYLE}</style></head><body>\
         <h1>patchpull {}</h1><p class=\"muted\">Read-only status; the admin API \
         (<code>/patchpull/v1/images</code>) has the same data as JSON.</p>\
         <p class=\"summary\"><span class=\"patched\" id=\"count-patched\">{} patched</span>\
         <span class=\"failed\" id=\"count-failed\">{} failed</span>\
         <span class=\"running\" id=\"count-waiting\">{} waiting</span>\
         <span class=\"unchanged\" id=\"count-unchanged\">{} unchanged</span></p>",
        escape(env!("CARGO_PKG_VERSION")),
        count("patched"),
        count("failed"),
        count("running"),
        count("unchanged"),
    );
    render_health(state, sandbox, &mut page);
    render_running(jobs, &mut page);
    render_images(jobs, &mut page);
    page.push_str("</body></html>\n");
    page
}

fn render_health(state: &AppState, sandbox: &Result<(), String>, page: &mut String) {
    page.push_str("<h2>Health</h2><table id=\"health\"><tr><th>component</th><th>state</th><th>detail</th></tr>");
    let (class, text, detail) = match sandbox {
        Ok(()) => (
            "ok",
            "available",
            "maintainer scripts run in the sandbox".to_owned(),
        ),
        Err(why) => ("bad", "unavailable", why.clone()),
    };
    let _ = write!(
        page,
        "<tr data-component=\"sandbox\"><td>sandbox</td><td class=\"{class}\">{text}</td><td>{}</td></tr>",
        escape(&detail)
    );
    let store = state.mirror.store();
    let used = store.used_bytes();
    let max = u64::try_from(state.metrics.store_max_bytes.get()).unwrap_or(0);
    let _ = write!(
        page,
        "<tr data-component=\"store\"><td>store</td><td class=\"ok\">{}</td><td>of {} (storage.max_size)</td></tr>",
        escape(&bytesize::ByteSize(used).to_string_as(true)),
        escape(&bytesize::ByteSize(max).to_string_as(true)),
    );
    let seen = state.metrics.upstreams_seen();
    for (name, url) in &state.upstreams {
        let (class, text, detail) = match seen.get(name) {
            None => ("muted", "not asked yet".to_owned(), String::new()),
            Some(last) => {
                let ago = last.at.elapsed();
                let healthy = (1..500).contains(&last.status) && last.status != 429;
                let answer = if last.status == 0 {
                    "no connection".to_owned()
                } else {
                    format!("HTTP {}", last.status)
                };
                let class = match (healthy, ago < RECENT) {
                    (true, _) => "ok",
                    (false, true) => "bad",
                    (false, false) => "muted",
                };
                let text = if healthy { "answering" } else { "failing" };
                (
                    class,
                    text.to_owned(),
                    format!("last answer {answer}, {} s ago", ago.as_secs()),
                )
            }
        };
        let _ = write!(
            page,
            "<tr data-component=\"upstream\" data-upstream=\"{n}\"><td>upstream {n} <code>{u}</code></td>\
             <td class=\"{class}\">{t}</td><td>{d}</td></tr>",
            n = escape(name),
            u = escape(url),
            t = escape(&text),
            d = escape(&detail),
        );
    }
    page.push_str("</table>");
}

fn image_cell(job: &JobView) -> String {
    match &job.record.image {
        Some(image) => format!("<td class=\"image\">{}</td>", escape(image)),
        None => format!(
            "<td class=\"image\">{}/<span class=\"muted\">(by digest)</span></td>",
            escape(&job.upstream)
        ),
    }
}

fn digest_cell(class: &str, digest: Option<&str>) -> String {
    match digest {
        Some(d) => format!(
            "<td class=\"{class}\" title=\"{}\"><code>{}</code></td>",
            escape(d),
            escape(&short(d))
        ),
        None => format!("<td class=\"{class}\"></td>"),
    }
}

fn render_running(jobs: &[JobView], page: &mut String) {
    page.push_str("<h2>Jobs running</h2>");
    let running: Vec<&JobView> = jobs.iter().filter(|j| j.status == "running").collect();
    if running.is_empty() {
        page.push_str("<p class=\"muted\" id=\"no-running\">No job is running.</p>");
        return;
    }
    page.push_str("<table id=\"running\"><tr><th>image</th><th>original</th><th>stage</th></tr>");
    for job in running {
        let _ = write!(
            page,
            "<tr data-original=\"{}\">{}{}<td class=\"stage\">{}</td></tr>",
            escape(&job.original),
            image_cell(job),
            digest_cell("original", Some(&job.original)),
            escape(job.detail.as_deref().unwrap_or_default()),
        );
    }
    page.push_str("</table>");
}

fn render_images(jobs: &[JobView], page: &mut String) {
    page.push_str("<h2>Images</h2>");
    if jobs.is_empty() {
        page.push_str("<p class=\"muted\" id=\"no-images\">No image was pulled by tag yet.</p>");
        return;
    }
    page.push_str(
        "<table id=\"images\"><tr><th>status</th><th>image</th><th>original</th>\
         <th>patched</th><th>engine</th><th>CVEs fixed</th><th>packages changed</th>\
         <th>time</th><th>detail</th></tr>",
    );
    for job in jobs {
        let status = if job.status == "running" {
            "waiting"
        } else {
            job.status
        };
        let fixed: Vec<String> = job.record.fixed().iter().map(|id| escape(id)).collect();
        let packages: Vec<String> = job
            .record
            .plan
            .iter()
            .map(|p| {
                format!(
                    "<span class=\"package\">{} {} &rarr; {}</span>",
                    escape(&p.name),
                    escape(&p.from),
                    escape(&p.to)
                )
            })
            .collect();
        let stages = &job.record.stages;
        let total: Option<f64> = match (
            stages.queued_seconds,
            stages.patch_seconds,
            stages.store_seconds,
        ) {
            (None, None, None) => None,
            (q, p, s) => Some(q.unwrap_or(0.0) + p.unwrap_or(0.0) + s.unwrap_or(0.0)),
        };
        let _ = write!(
            page,
            "<tr data-original=\"{o}\" data-status=\"{s}\"><td class=\"status {s}\">{s}</td>{image}{orig}{patched}\
             <td class=\"engine\">{engine}</td><td class=\"cves\">{cves}</td>\
             <td class=\"packages\">{packages}</td><td class=\"time\" title=\"queued {q}, patch {p}, store {st}\">{total}</td>\
             <td class=\"detail\">{detail}</td></tr>",
            o = escape(&job.original),
            s = escape(status),
            image = image_cell(job),
            orig = digest_cell("original", Some(&job.original)),
            patched = digest_cell("patched", job.patched.as_deref()),
            engine = escape(job.record.engine.as_deref().unwrap_or_default()),
            cves = fixed.join("<br>"),
            packages = packages.join("<br>"),
            q = seconds(stages.queued_seconds),
            p = seconds(stages.patch_seconds),
            st = seconds(stages.store_seconds),
            total = seconds(total),
            detail = escape(job.detail.as_deref().unwrap_or_default()),
        );
    }
    page.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    fn job(status: &'static str, detail: &str) -> JobView {
        JobView {
            upstream: "local".into(),
            original: format!("sha256:{}", "ab".repeat(32)),
            status,
            patched: None,
            detail: Some(detail.into()),
            partial: None,
            platforms: Vec::new(),
            seconds_ago: None,
            record: crate::pipeline::JobRecord {
                image: Some("local/team/<app>:1".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn running_jobs_show_their_stage_escaped() {
        let mut page = String::new();
        render_running(
            &[job("running", "linux/amd64: fetching <2> packages")],
            &mut page,
        );
        assert!(
            page.contains("<td class=\"stage\">linux/amd64: fetching &lt;2&gt; packages</td>"),
            "{page}"
        );
        assert!(page.contains("local/team/&lt;app&gt;:1"), "{page}");
        let mut none = String::new();
        render_running(&[job("patched", "")], &mut none);
        assert!(none.contains("No job is running"), "{none}");
    }

    #[test]
    fn a_running_job_is_listed_as_waiting() {
        let mut page = String::new();
        render_images(&[job("running", "queued")], &mut page);
        assert!(page.contains("data-status=\"waiting\""), "{page}");
        assert!(!page.contains("<app>"), "{page}");
    }

    #[test]
    fn short_digest_keeps_the_algorithm() {
        assert_eq!(short("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
        assert_eq!(short("x"), "x");
    }
}
