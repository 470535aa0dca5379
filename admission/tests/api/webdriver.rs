//! A page in Debian's headless Chromium, driven over WebDriver by Debian's chromedriver: the few
//! steps the browser tests need (fill a field found by its label, click a button found by its
//! name, wait for text or for a condition, read the page, screenshot), each waiting for its
//! element or condition up to a deadline, so the tests read like a person's steps. Plain Rust
//! and the distribution's own browser and driver: no Node, no browser downloaded by a tool.

use std::{
    future::Future,
    path::PathBuf,
    process::Stdio,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fantoccini::{
    Client, ClientBuilder, Locator,
    elements::{Element, ElementRef},
    wd::{Capabilities, WebDriverCompatibleCommand},
};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// How long an action (fill, click) may wait for its element to be shown: the login form
/// appears only once the page's script has run.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait looks again: often enough that a test never waits long past the moment.
const POLL: Duration = Duration::from_millis(100);
/// How the W3C protocol marks an element in a script's result (its "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Shared by the scripts that look for elements: "visible" as in rendered with a box (what a
/// person could see and use), names compared loosely (whitespace collapsed, case ignored, a
/// substring) and exactly one match wanted, so that a renamed or duplicated control fails the
/// step instead of the test typing into the wrong one.
const HELPERS: &str = r#"
const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
const norm = (s) => (s || "").replace(/\s+/g, " ").trim().toLowerCase();
const one = (found, what) => {
  const shown = [...new Set(found)].filter(visible);
  return shown.length === 1 ? shown[0] : `${shown.length} visible ${what}`;
};
"#;

/// The form field labelled `arguments[0]`: by a `<label>`, `aria-label` or `aria-labelledby`.
const BY_LABEL: &str = r#"
const want = norm(arguments[0]);
const found = [];
for (const label of document.querySelectorAll("label")) {
  if (label.control && norm(label.textContent).includes(want)) found.push(label.control);
}
for (const el of document.querySelectorAll("[aria-label]")) {
  if (norm(el.getAttribute("aria-label")).includes(want)) found.push(el);
}
for (const el of document.querySelectorAll("[aria-labelledby]")) {
  const ids = el.getAttribute("aria-labelledby").split(/\s+/);
  const text = ids.map((id) => document.getElementById(id)?.textContent).join(" ");
  if (norm(text).includes(want)) found.push(el);
}
return one(found, "fields labelled so");
"#;

/// The button named `arguments[0]` (by its text, `aria-label` or value), once enabled.
const BY_BUTTON_NAME: &str = r#"
const want = norm(arguments[0]);
const found = [...document.querySelectorAll(
  "button, input[type=button], input[type=submit], input[type=reset], [role=button]")]
  .filter((el) => norm(el.getAttribute("aria-label") || (el.tagName === "INPUT" ? el.value : el.textContent)).includes(want));
const button = one(found, "buttons named so");
return typeof button === "string" || !button.disabled ? button : "the button is disabled";
"#;

/// The index of the first of the regular expressions `arguments[0]` the page's visible text
/// matches, or -1.
const TEXT_SHOWN: &str = r#"
const shown = document.body ? document.body.innerText : "";
return arguments[0].findIndex((pattern) => new RegExp(pattern).test(shown));
"#;

/// The page's size in CSS pixels and how many device pixels each one takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Viewport {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) scale: f64,
}

/// One browser with one page, and the chromedriver serving it.
pub(crate) struct Page {
    client: Client,
    /// Held so that chromedriver dies with the page (`kill_on_drop`).
    _driver: Child,
    /// Names the failure screenshot, `<name>-failure.png`.
    name: &'static str,
    screenshots: PathBuf,
}

impl Page {
    /// Starts chromedriver on a free port and opens a headless Chromium page of `viewport`
    /// size. `CHROMIUM` and `CHROMEDRIVER` override Debian's paths.
    pub(crate) async fn open(name: &'static str, viewport: Viewport, screenshots: PathBuf) -> Self {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port for chromedriver")
            .port();
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{chromedriver} starts (apt-get install chromium-driver): {e}")
            });
        let url = format!("http://127.0.0.1:{port}/");
        wait_ready(&mut driver, &url).await;

        let size = format!("--window-size={},{}", viewport.width, viewport.height);
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", size],
                // The exact viewport and pixel ratio, whatever the window around it; neither a
                // touch screen nor a mobile browser, only the size of one.
                "mobileEmulation": {"deviceMetrics": {
                    "width": viewport.width, "height": viewport.height,
                    "pixelRatio": viewport.scale, "mobile": false, "touch": false,
                }},
            }),
        );
        // The console's lines (logs and uncaught errors), for the failure message.
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        // A page that never loads or a script that never returns fails the step, not the run.
        capabilities.insert(
            "timeouts".into(),
            json!({"pageLoad": 30_000, "script": 30_000, "implicit": 0}),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver opens {chromium} headless: {e}"));
        Self {
            client,
            _driver: driver,
            name,
            screenshots,
        }
    }

    /// Loads `url` and waits for its load event.
    pub(crate) async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))
    }

    /// Waits until the page's visible text matches one of `patterns` (regular expressions, as
    /// JavaScript reads them) and returns the index of the first that matches.
    pub(crate) async fn wait_for_text(
        &self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<usize> {
        let what = format!("text matching one of {patterns:?}");
        poll(&what, timeout, || async {
            let index = self
                .client
                .execute(TEXT_SHOWN, vec![json!(patterns)])
                .await
                .map_err(|e| e.to_string())?;
            usize::try_from(index.as_i64().unwrap_or(-1)).map_err(|_| "not shown".to_string())
        })
        .await
    }

    /// Waits until `script` (a function body run in the page) returns `true`.
    pub(crate) async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
    ) -> Result<()> {
        poll(what, timeout, || async {
            match self.client.execute(script, vec![]).await {
                Ok(Value::Bool(true)) => Ok(()),
                Ok(other) => Err(format!("it returned {other}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Types `value` into the field labelled `label`, once that field is shown.
    pub(crate) async fn fill(&self, label: &str, value: &str) -> Result<()> {
        poll(
            &format!("fill the field labelled {label:?}"),
            ACTION_TIMEOUT,
            || async {
                let field = self.find(BY_LABEL, label).await?;
                field.clear().await.map_err(|e| e.to_string())?;
                field.send_keys(value).await.map_err(|e| e.to_string())
            },
        )
        .await
    }

    /// Clicks the button named `name`, once it is shown and enabled.
    pub(crate) async fn click(&self, name: &str) -> Result<()> {
        poll(
            &format!("click the button {name:?}"),
            ACTION_TIMEOUT,
            || async {
                let button = self.find(BY_BUTTON_NAME, name).await?;
                button.click().await.map_err(|e| e.to_string())
            },
        )
        .await
    }

    /// The text content of the element `css` selects.
    pub(crate) async fn text(&self, css: &str) -> Result<String> {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .context(css.to_string())?;
        let text = element.prop("textContent").await.context(css.to_string())?;
        Ok(text.unwrap_or_default())
    }

    /// The attribute `name` of the element `css` selects.
    pub(crate) async fn attr(&self, css: &str, name: &str) -> Result<Option<String>> {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .context(css.to_string())?;
        element
            .attr(name)
            .await
            .with_context(|| format!("{css} [{name}]"))
    }

    /// Saves what the page shows as `file` (PNG) among the screenshots.
    pub(crate) async fn screenshot(&self, file: &str) -> Result<()> {
        let png = self.client.screenshot().await.context("screenshot")?;
        std::fs::create_dir_all(&self.screenshots)?;
        let path = self.screenshots.join(file);
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))
    }

    /// Closes the browser and returns what the steps found, or, when a step failed, saves a
    /// `<name>-failure.png` screenshot and fails the test with the error, the browser's
    /// console and the page's source.
    pub(crate) async fn finish<T>(self, outcome: Result<T>) -> T {
        let error = match outcome {
            Ok(found) => {
                self.close().await;
                return found;
            }
            Err(error) => error,
        };
        let shot = match self.screenshot(&format!("{}-failure.png", self.name)).await {
            Ok(()) => format!("{}-failure.png", self.name),
            Err(e) => format!("none ({e:#})"),
        };
        let console = self.console().await;
        let source = self
            .client
            .source()
            .await
            .unwrap_or_else(|e| format!("(no page source: {e})"));
        self.close().await;
        panic!(
            "{} failed: {error:#}\nscreenshot: {shot}\n--- browser console ---\n{console}\n\
             --- page source ---\n{source}",
            self.name
        );
    }

    /// The element a finder script (`HELPERS` + `script`) returns for `arg`, or why there is
    /// none yet.
    async fn find(&self, script: &str, arg: &str) -> Result<Element, String> {
        let found = self
            .client
            .execute(&format!("{HELPERS}{script}"), vec![json!(arg)])
            .await
            .map_err(|e| e.to_string())?;
        match found.get(ELEMENT_KEY).and_then(Value::as_str) {
            Some(id) => Ok(Element::from_element_id(
                self.client.clone(),
                ElementRef::from(id.to_string()),
            )),
            None => Err(found
                .as_str()
                .map_or_else(|| found.to_string(), str::to_string)),
        }
    }

    /// The browser console's lines so far, one a line.
    async fn console(&self) -> String {
        match self.client.issue_cmd(BrowserLog).await {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|entry| {
                    let field = |name: &str| entry[name].as_str().unwrap_or_default().to_string();
                    format!("{}: {}", field("level"), field("message"))
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(other) => other.to_string(),
            Err(e) => format!("(no console log: {e})"),
        }
    }

    /// Ends the session (chromedriver quits Chromium), then chromedriver.
    async fn close(&self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the browser session: {e}");
        }
    }
}

/// Waits until chromedriver answers `/status` as ready, failing early if it exits.
async fn wait_ready(driver: &mut Child, url: &str) {
    let status = format!("{url}status");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = driver.try_wait().expect("chromedriver's status") {
            panic!("chromedriver exited at start-up: {exit}");
        }
        if let Ok(answer) = http.get(&status).send().await
            && let Ok(body) = answer.json::<Value>().await
            && body["value"]["ready"] == json!(true)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver not ready at {url} within 20 s"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `attempt` until it succeeds, every `POLL`, failing with its last reason at `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut why = None;
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(reason)) => why = Some(reason),
            Err(_) => {}
        }
        if tokio::time::Instant::now() + POLL > deadline {
            let why = why.as_deref().unwrap_or("no try returned");
            bail!("{what}: not within {timeout:?} ({why})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// chromedriver's log endpoint (outside the W3C protocol, still served in W3C mode): the
/// browser console's entries since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    // `<Url as FromStr>::Err` is url's ParseError, named without a dependency on url itself.
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, <Url as FromStr>::Err> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}
