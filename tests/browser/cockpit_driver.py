#!/usr/bin/python3
"""Headless Chromium for the browser tests, driven line by line.

The test (tests/tests/cockpit_page.rs) starts the real parts (a private
dbus-daemon, the daemon, cockpit-ws with cockpit-bridge) and runs this
script; it writes one JSON command per line on our stdin and reads one JSON
reply per line from our stdout. Commands:

  {"cmd": "open", "url": U}                       load a page
  {"cmd": "frame", "name": N, "timeout": S}       work inside the iframe N
        (Cockpit's shell shows a page in one) once it has loaded
  {"cmd": "wait", "css": C, "text": T, "timeout": S}
        until an element matching C exists (whose text contains T, when
        given); the reply holds "ms", the time waited, and "text"
  {"cmd": "gone", "css": C, "text": T, "timeout": S}
        until no element matches C (with text containing T, when given)
  {"cmd": "click", "css": C}                       click the first match
  {"cmd": "type", "css": C, "text": T}             clear the first match, type T
  {"cmd": "js", "script": S}                       "value": what S returns
  {"cmd": "texts", "css": C}                       "texts" of every match
  {"cmd": "size", "width": W, "height": H}         resize the window
  {"cmd": "screenshot", "path": P}                 a PNG of the page
  {"cmd": "quit"}

A reply is {"ok": true, ...} or {"ok": false, "error": E, "page": the
page's text}, so a failing test shows what the page said.
"""

import json
import sys
import tempfile
import time

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
except ImportError as e:
    print(json.dumps({"ok": False, "error": f"python3-selenium is missing ({e})"}), flush=True)
    sys.exit(2)

POLL_S = 0.02

FIND = """
const [css, text] = arguments;
for (const e of document.querySelectorAll(css)) {
    if (text === null || e.textContent.includes(text))
        return e.textContent;
}
return null;
"""


def reply(**kw):
    print(json.dumps(kw), flush=True)


def page_text(d):
    try:
        return d.execute_script("return document.body ? document.body.innerText : ''")[:4000]
    except WebDriverException as e:
        return f"(page text unavailable: {e.msg})"


def main():
    chromium, chromedriver = sys.argv[1], sys.argv[2]
    profile = tempfile.TemporaryDirectory(prefix="faultbridge-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--window-size=1280,1000",
              "--force-device-scale-factor=1", f"--user-data-dir={profile.name}"):
        opts.add_argument(a)
    try:
        d = webdriver.Chrome(service=Service(chromedriver), options=opts)
    except WebDriverException as e:
        reply(ok=False, error=f"cannot start {chromium} with {chromedriver}: {e.msg}")
        return 2
    reply(ok=True, ready=True)
    in_frame = False
    try:
        for line in sys.stdin:
            c = json.loads(line)
            cmd = c["cmd"]
            try:
                if cmd == "quit":
                    reply(ok=True)
                    break
                if cmd == "open":
                    d.switch_to.default_content()
                    in_frame = False
                    d.get(c["url"])
                    reply(ok=True)
                elif cmd == "frame":
                    deadline = time.monotonic() + float(c.get("timeout", 10))
                    css = f'iframe[name="{c["name"]}"][data-loaded]'
                    while not d.find_elements("css selector", css):
                        if time.monotonic() >= deadline:
                            raise WebDriverException(f"no loaded frame {c['name']!r}")
                        time.sleep(POLL_S)
                    d.switch_to.frame(d.find_element("css selector", css))
                    in_frame = True
                    reply(ok=True)
                elif cmd in ("wait", "gone"):
                    start = time.monotonic()
                    deadline = start + float(c.get("timeout", 10))
                    while True:
                        got = d.execute_script(FIND, c["css"], c.get("text"))
                        if (got is not None) == (cmd == "wait"):
                            reply(ok=True, ms=round((time.monotonic() - start) * 1000, 1), text=got)
                            break
                        if time.monotonic() >= deadline:
                            what = c["css"] + (f" with text {c['text']!r}" if c.get("text") else "")
                            reply(ok=False, error=f"{cmd} {what}: not within {c.get('timeout', 10)} s",
                                  page=page_text(d))
                            break
                        time.sleep(POLL_S)
                elif cmd == "click":
                    d.find_element("css selector", c["css"]).click()
                    reply(ok=True)
                elif cmd == "type":
                    e = d.find_element("css selector", c["css"])
                    e.clear()
                    e.send_keys(c["text"])
                    reply(ok=True)
                elif cmd == "js":
                    reply(ok=True, value=d.execute_script(c["script"]))
                elif cmd == "texts":
                    els = d.find_elements("css selector", c["css"])
                    reply(ok=True, texts=[e.text for e in els])
                elif cmd == "size":
                    d.set_window_size(int(c["width"]), int(c["height"]))
                    reply(ok=True)
                elif cmd == "screenshot":
                    # The whole page, however long: the window grows to it
                    # (and to the shell's top bar around a frame).
                    h = d.execute_script("return document.documentElement.scrollHeight")
                    w = d.get_window_size()["width"]
                    d.set_window_size(w, int(h) + (220 if in_frame else 140))
                    time.sleep(0.5)
                    ok = d.save_screenshot(c["path"])
                    reply(ok=bool(ok))
                else:
                    reply(ok=False, error=f"unknown command {cmd!r}")
            except WebDriverException as e:
                reply(ok=False, error=f"{cmd}: {e.msg}", page=page_text(d))
    finally:
        d.quit()
        profile.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
