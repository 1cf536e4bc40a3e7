/*
 * faultbridge's page in Cockpit.
 *
 * Everything comes from the daemon's D-Bus interface on the system bus
 * (docs/dbus.md): ListMonitors and each monitor's properties (kept live by
 * PropertiesChanged), Status (the sources' counters), the Fault and Lost
 * signals, History, and a monitor's Reset. Cockpit's bridge carries the
 * calls, so the bus policy decides what the logged-in user may do.
 *
 * Fault fields are text from a driver or a user-space reporter: they reach
 * the page through textContent only, never as markup.
 */
"use strict";

(function () {
    const NAME = "org.faultbridge.Bridge1";
    const ROOT = "/org/faultbridge/Bridge1";
    const BRIDGE = "org.faultbridge.Bridge1";
    const MONITOR = "org.faultbridge.Monitor1";
    const PROPERTIES = "org.freedesktop.DBus.Properties";

    const LIVE_MAX = 100;          // entries kept in the live stream
    const HISTORY_PAGE = 50;       // rows shown per history page
    const HISTORY_CHUNK = 1000;    // rows asked for per History call
    const HISTORY_CALLS = 20;      // History calls per page at most (filtering scans)
    const STATUS_EVERY_MS = 5000;  // Status is polled; monitors are live
    const RETRY_MS = 2000;         // reconnecting after the daemon or the bus went away

    const ACCESS_DENIED = [
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.faultbridge.Bridge1.Error.AccessDenied",
    ];

    let client = null;        // the D-Bus client, null while disconnected
    let generation = 0;       // bumps on every (re)connection: late replies of an old one are dropped
    let statusTimer = null;
    let retryTimer = null;
    let resetClient = null;   // superuser "try": Cockpit's administrative access, when on
    let lastUnknownRefresh = 0;

    /** path → { props, row, cells, button, message } */
    const monitors = new Map();

    const live = { pending: [], flushTimer: null, faults: 0, lostNotices: 0, lostRecords: 0 };

    const history = {
        after: 0,          // the record id the shown page starts after
        next: null,        // the record id the next page starts after, null at the end
        back: [],          // the starts of earlier pages
        busy: false,
        queued: null,      // [after, back] of a click while busy
        loaded: false,
    };

    function $(id) {
        return document.getElementById(id);
    }

    function el(tag, cls, text) {
        const e = document.createElement(tag);
        if (cls)
            e.className = cls;
        if (text !== undefined && text !== null)
            e.textContent = String(text);
        return e;
    }

    function cell(row, label, text, cls) {
        const td = el("td", cls, text);
        td.dataset.label = label;
        row.appendChild(td);
        return td;
    }

    /* A D-Bus variant as cockpit.dbus hands it over ({ t, v }), or a plain value. */
    function unwrap(v) {
        return v !== null && typeof v === "object" && "v" in v && "t" in v ? v.v : v;
    }

    function errorText(err) {
        if (!err)
            return "unknown error";
        const msg = err.message || err.problem || String(err);
        return err.name ? msg + " (" + err.name + ")" : msg;
    }

    /* ---- the connection's state ---------------------------------------- */

    const STATES = {
        connecting: { icon: "…", text: "Connecting to faultbridge on the system bus…" },
        running: { icon: "✓", text: "faultbridge is running." },
        "not-running": {
            icon: "✗",
            text: "faultbridge is not running: nothing on the system bus owns " + NAME +
                ". The monitors' states are unknown until it starts (systemctl start faultbridge).",
        },
        unreachable: { icon: "✗", text: "The system bus is unreachable" },
        failed: { icon: "✗", text: "faultbridge does not answer" },
    };

    function setConnection(state, detail) {
        const box = $("connection");
        const s = STATES[state];
        const text = detail ? s.text + ": " + detail : s.text;
        if (box.dataset.state === state && $("connection-text").textContent === text)
            return; // unchanged: an alert is not announced again
        box.dataset.state = state;
        box.setAttribute("role", state === "running" || state === "connecting" ? "status" : "alert");
        box.querySelector(".fb-icon").textContent = s.icon;
        $("connection-text").textContent = text;
        document.body.dataset.connection = state;
        if (state !== "running")
            markUnknown();
        summarizeMonitors();
    }

    function connect() {
        clearTimeout(retryTimer);
        retryTimer = null;
        const gen = ++generation;
        const c = cockpit.dbus(NAME, { bus: "system" });
        client = c;

        c.addEventListener("owner", function (_event, owner) {
            if (gen !== generation)
                return;
            if (owner) {
                refreshAll(gen);
            } else {
                stopStatus();
                setConnection("not-running");
                reconnectSoon();
            }
        });
        c.addEventListener("close", function (_event, options) {
            if (gen !== generation)
                return;
            client = null;
            generation++;
            stopStatus();
            if (options && options.problem === "not-found") {
                // The bridge closes a channel whose name nobody owns: the bus
                // is there, the daemon is not. Ask the bus itself to be sure.
                probeBus();
            } else {
                setConnection("unreachable", options ? (options.message || options.problem || "closed") : "closed");
            }
            reconnectSoon();
        });

        // The bridge adds the well-known name as the sender of these
        // matches, so only the daemon's own signals arrive here.
        c.subscribe({ path: ROOT, interface: BRIDGE, member: "Fault" }, function (_path, _iface, _member, args) {
            if (gen === generation)
                onFault(args);
        });
        c.subscribe({ path: ROOT, interface: BRIDGE, member: "Lost" }, function (_path, _iface, _member, args) {
            if (gen === generation)
                onLost(args);
        });
        c.subscribe({ path_namespace: ROOT + "/monitor", interface: PROPERTIES, member: "PropertiesChanged" },
                    function (path, _iface, _member, args) {
                        if (gen === generation && args[0] === MONITOR)
                            onProperties(path, args[1] || {});
                    });

        refreshAll(gen);
    }

    /* Connects afresh after RETRY_MS: while the daemon is away this also
     * notices the bus itself going away (a channel that is still open
     * says nothing about it). */
    function reconnectSoon() {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(function () {
            retryTimer = null;
            if (client) {
                const old = client;
                client = null;
                generation++;
                old.close();
            }
            connect();
        }, RETRY_MS);
    }

    function probeBus() {
        const bus = cockpit.dbus("org.freedesktop.DBus", { bus: "system" });
        bus.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", [])
                .then(function () {
                    if (!client)
                        setConnection("not-running");
                }, function (err) {
                    if (!client)
                        setConnection("unreachable", errorText(err));
                })
                .finally(function () {
                    bus.close();
                });
    }

    function call(gen, path, iface, method, args, type) {
        if (!client || gen !== generation)
            return Promise.reject(new Error("disconnected"));
        return client.call(path, iface, method, args, type ? { type: type } : undefined);
    }

    function refreshAll(gen) {
        call(gen, ROOT, BRIDGE, "ListMonitors", [])
                .then(function (reply) {
                    if (gen !== generation)
                        return null;
                    const paths = reply[0] || [];
                    return Promise.all(paths.map(function (p) {
                        return call(gen, p, PROPERTIES, "GetAll", [MONITOR]).then(function (r) {
                            return { path: p, props: r[0] || {} };
                        });
                    }));
                })
                .then(function (list) {
                    if (!list || gen !== generation)
                        return;
                    showMonitors(list);
                    setConnection("running");
                    startStatus(gen);
                    if (!history.loaded)
                        loadHistory(0, []);
                })
                .catch(function (err) {
                    if (gen !== generation || !client)
                        return;
                    const name = err && err.name;
                    if (name === "org.freedesktop.DBus.Error.ServiceUnknown" ||
                        name === "org.freedesktop.DBus.Error.NameHasNoOwner" ||
                        (err && err.problem === "not-found"))
                        setConnection("not-running");
                    else
                        setConnection("failed", errorText(err));
                    stopStatus();
                    reconnectSoon(); // and try again
                });
    }

    /* ---- monitors ------------------------------------------------------ */

    function showMonitors(list) {
        const body = $("monitors").querySelector("tbody");
        const seen = new Set();
        list.forEach(function (m) {
            seen.add(m.path);
            let entry = monitors.get(m.path);
            if (!entry) {
                entry = makeMonitorRow(m.path);
                monitors.set(m.path, entry);
            }
            body.appendChild(entry.row); // configuration order
            entry.props = {};
            updateMonitor(entry, m.props);
        });
        for (const [path, entry] of monitors) {
            if (!seen.has(path)) {
                entry.row.remove();
                monitors.delete(path);
            }
        }
        $("monitors-empty").hidden = monitors.size !== 0;
        summarizeMonitors();
    }

    function makeMonitorRow(path) {
        const row = el("tr");
        const cells = {
            Name: cell(row, "Name", "", "fb-name"),
            Category: cell(row, "Category", ""),
            Keyword: cell(row, "Keyword", ""),
            State: cell(row, "State", "", "fb-state"),
            ErrorCount: cell(row, "Errors", "", "fb-num"),
            LastSequence: cell(row, "Last sequence", "", "fb-num"),
        };
        const action = cell(row, "Action", "", "fb-action");
        const button = el("button", "fb-reset", "Reset");
        button.type = "button";
        button.hidden = true;
        button.addEventListener("click", function () {
            resetMonitor(path);
        });
        const message = el("p", "fb-message");
        message.setAttribute("role", "alert");
        message.hidden = true;
        // One box in the cell, so a narrow screen's label column stays one column.
        const box = el("div", "fb-action-box");
        box.appendChild(button);
        box.appendChild(message);
        action.appendChild(box);
        return { path: path, props: {}, row: row, cells: cells, button: button, message: message };
    }

    function updateMonitor(entry, changed) {
        for (const key in changed)
            entry.props[key] = unwrap(changed[key]);
        const p = entry.props;
        const name = p.Name !== undefined ? String(p.Name) : entry.path.split("/").pop();
        entry.row.dataset.monitor = name;
        entry.cells.Name.textContent = name;
        entry.cells.Category.textContent = p.Category !== undefined ? p.Category : "";
        if (p.Keyword)
            entry.cells.Keyword.textContent = p.Keyword;
        else
            entry.cells.Keyword.replaceChildren(el("span", "fb-muted", "any device"));
        entry.cells.ErrorCount.textContent = p.ErrorCount !== undefined ? String(p.ErrorCount) : "";
        entry.cells.LastSequence.textContent = p.LastSequence ? String(p.LastSequence) : "none";
        showState(entry, p.State === "Error" ? "Error" : p.State === "Normal" ? "Normal" : "Unknown");
        entry.button.setAttribute("aria-label", "Reset monitor " + name);
    }

    /* A monitor's state, and why a Normal cannot be trusted when a source
     * that reports its category is down (the Degraded property). */
    function showState(entry, state) {
        const icons = { Error: "⚠", Normal: "✓", Unknown: "?" };
        const degraded = state !== "Unknown" && entry.props.Degraded ? String(entry.props.Degraded) : "";
        let badge;
        if (degraded && state === "Normal") {
            badge = el("span", "fb-badge fb-badge-warning");
            badge.appendChild(el("span", "fb-icon", "?")).setAttribute("aria-hidden", "true");
            badge.appendChild(el("span", "fb-badge-text", "Normal, unconfirmed"));
        } else {
            badge = el("span", "fb-badge fb-badge-" + state.toLowerCase());
            badge.appendChild(el("span", "fb-icon", icons[state])).setAttribute("aria-hidden", "true");
            badge.appendChild(el("span", "fb-badge-text", state));
        }
        entry.cells.State.replaceChildren(badge);
        if (degraded)
            entry.cells.State.appendChild(el("p", "fb-degraded", "Degraded: " + degraded));
        entry.row.dataset.degraded = degraded ? "true" : "false";
        entry.row.dataset.state = state;
        entry.row.classList.toggle("fb-row-error", state === "Error");
        entry.button.hidden = state !== "Error";
        if (state === "Normal")
            clearMessage(entry);
    }

    function clearMessage(entry) {
        entry.message.hidden = true;
        entry.message.textContent = "";
        entry.message.className = "fb-message";
    }

    function markUnknown() {
        for (const entry of monitors.values())
            showState(entry, "Unknown");
        summarizeMonitors();
    }

    function summarizeMonitors() {
        let errors = 0;
        for (const entry of monitors.values()) {
            if (entry.row.dataset.state === "Error")
                errors++;
        }
        const n = monitors.size;
        const text = n + (n === 1 ? " monitor" : " monitors") +
            (errors ? ", " + errors + " in Error" : $("connection").dataset.state === "running" ? ", all Normal" : "");
        const summary = $("monitors-summary");
        summary.textContent = text;
        summary.classList.toggle("fb-summary-error", errors > 0);
    }

    function onProperties(path, changed) {
        const entry = monitors.get(path);
        if (!entry) {
            // A monitor we do not know yet (the daemon restarted with
            // another configuration): read them all again, once a second
            // at most.
            const t = Date.now();
            if (t - lastUnknownRefresh > 1000) {
                lastUnknownRefresh = t;
                refreshAll(generation);
            }
            return;
        }
        updateMonitor(entry, changed);
        summarizeMonitors();
    }

    function resetMonitor(path) {
        const entry = monitors.get(path);
        if (!entry)
            return;
        if (!resetClient) {
            resetClient = cockpit.dbus(NAME, { bus: "system", superuser: "try" });
            resetClient.addEventListener("close", function () {
                resetClient = null;
            });
        }
        const name = entry.row.dataset.monitor;
        entry.button.disabled = true;
        entry.button.textContent = "Resetting…";
        clearMessage(entry);
        resetClient.call(path, MONITOR, "Reset", [])
                .then(function () {
                    // The State change arrives as PropertiesChanged.
                }, function (err) {
                    const denied = err && ACCESS_DENIED.indexOf(err.name) >= 0;
                    entry.message.className = "fb-message " + (denied ? "fb-message-refused" : "fb-message-failed");
                    entry.message.textContent = denied
                        ? "Not permitted: resetting monitor " + name + " needs administrative access " +
                          "(turn it on in Cockpit) or membership in group faultbridge."
                        : "Reset of " + name + " failed: " + errorText(err);
                    entry.message.hidden = false;
                })
                .finally(function () {
                    entry.button.disabled = false;
                    entry.button.textContent = "Reset";
                });
    }

    /* ---- Status: the daemon and its sources ---------------------------- */

    function startStatus(gen) {
        stopStatus();
        const tick = function () {
            loadStatus(gen);
        };
        tick();
        statusTimer = setInterval(tick, STATUS_EVERY_MS);
    }

    function stopStatus() {
        clearInterval(statusTimer);
        statusTimer = null;
    }

    function duration(ns) {
        let s = Math.floor(Number(ns) / 1e9);
        const d = Math.floor(s / 86400);
        s -= d * 86400;
        const h = Math.floor(s / 3600);
        s -= h * 3600;
        const m = Math.floor(s / 60);
        s -= m * 60;
        if (d)
            return d + " d " + h + " h";
        if (h)
            return h + " h " + m + " min";
        if (m)
            return m + " min " + s + " s";
        return s + " s";
    }

    function loadStatus(gen) {
        call(gen, ROOT, BRIDGE, "Status", [])
                .then(function (reply) {
                    if (gen !== generation)
                        return;
                    const st = reply[0] || {};
                    const version = unwrap(st.version);
                    const pid = unwrap(st.pid);
                    const uptime = unwrap(st.uptime_ns);
                    const dbus = unwrap(st.dbus) || {};
                    const parts = [];
                    if (version !== undefined)
                        parts.push("faultbridge " + version);
                    if (pid !== undefined)
                        parts.push("process " + pid);
                    if (uptime !== undefined)
                        parts.push("up " + duration(uptime));
                    if (dbus.lost_signals)
                        parts.push(dbus.lost_signals + " loss notices sent on D-Bus");
                    $("daemon-info").textContent = parts.join(" · ");
                    const states = unwrap(st.source_states);
                    showSources(unwrap(st.sources) || {}, states || {});
                    showHealth(unwrap(st.health), states);
                    showDegraded(unwrap(st.monitors) || {});
                }, function (err) {
                    if (gen !== generation || !client)
                        return;
                    $("daemon-info").textContent = "Status failed: " + errorText(err);
                    if (!err || err.name !== "org.faultbridge.Bridge1.Error.Busy") {
                        // The daemon or the bus went away without a word:
                        // find out which.
                        stopStatus();
                        reconnectSoon();
                    }
                });
    }

    /* The daemon's own verdict: "ok" while every configured source runs. */
    function showHealth(health, states) {
        const p = $("sources-health");
        if (health === undefined || states === undefined) {
            p.textContent = ""; // a daemon that does not tell
            p.classList.remove("fb-summary-error");
            $("sources-down").hidden = true;
            return;
        }
        const down = Object.keys(states).filter(function (k) {
            return String(states[k]) !== "running";
        });
        p.textContent = health === "ok" && down.length === 0
            ? "✓ Every configured source runs."
            : "⚠ Degraded: " + (down.length ? down.join(", ") : "a source") + (down.length === 1 ? " is" : " are") +
              " down; a Normal monitor of the categories " + (down.length === 1 ? "it reports" : "they report") +
              " cannot be trusted.";
        p.classList.toggle("fb-summary-error", p.textContent.charAt(0) === "⚠");
        const list = $("sources-down");
        list.replaceChildren.apply(list, down.map(function (k) {
            const li = el("li");
            li.appendChild(el("strong", null, k + ": "));
            li.appendChild(document.createTextNode(String(states[k]).replace(/^down: /, "")));
            return li;
        }));
        list.hidden = down.length === 0;
    }

    /* Degraded has no change signal: Status brings it with every poll. */
    function showDegraded(byName) {
        for (const entry of monitors.values()) {
            const m = byName[entry.row.dataset.monitor];
            if (!m)
                continue;
            const d = unwrap(m.Degraded);
            if (d === undefined || String(d) === String(entry.props.Degraded || ""))
                continue;
            entry.props.Degraded = d;
            showState(entry, entry.row.dataset.state);
        }
    }

    function showSources(sources, states) {
        const body = $("sources").querySelector("tbody");
        const rows = [];
        const names = Object.keys(sources).concat(Object.keys(states).filter(function (k) {
            return !(k in sources);
        }));
        names.sort().forEach(function (name) {
            const c = sources[name] || {};
            const state = states[name] === undefined ? null : String(states[name]);
            const down = state !== null && state !== "running";
            const n = function (k) {
                return Number(c[k] || 0);
            };
            const lost = n("lost");
            const errors = n("errors") + n("malformed") + n("truncated");
            let health = "OK";
            let icon = "✓";
            let cls = "ok";
            if (down) {
                // Why: in the list under the summary.
                health = "Down";
                icon = "✗";
                cls = "error";
            } else if (lost > 0 || n("overruns") > 0 || n("gaps") > 0) {
                health = "Records lost";
                icon = "⚠";
                cls = "error";
            } else if (errors > 0) {
                health = "Errors";
                icon = "⚠";
                cls = "warning";
            } else if (n("refused") > 0) {
                // Datagrams from senders that `accept` does not trust.
                health = "Refused senders";
                icon = "⚠";
                cls = "warning";
            }
            const row = el("tr");
            row.dataset.source = name;
            row.dataset.health = cls;
            cell(row, "Source", name, "fb-name");
            const h = cell(row, "Health", "");
            const badge = el("span", "fb-badge fb-badge-" + cls);
            badge.appendChild(el("span", "fb-icon", icon)).setAttribute("aria-hidden", "true");
            badge.appendChild(el("span", "fb-badge-text", health));
            h.appendChild(badge);
            cell(row, "Received", n("received"), "fb-num");
            cell(row, "Delivered", n("delivered"), "fb-num");
            cell(row, "Lost", lost, "fb-num");
            cell(row, "Overruns", n("overruns"), "fb-num");
            cell(row, "Gaps", n("gaps"), "fb-num");
            cell(row, "Malformed", n("malformed"), "fb-num");
            cell(row, "Errors", n("errors"), "fb-num");
            cell(row, "Refused", n("refused"), "fb-num");
            rows.push(row);
        });
        body.replaceChildren.apply(body, rows);
        $("sources-empty").hidden = rows.length !== 0;
    }

    /* ---- the live stream ----------------------------------------------- */

    function now() {
        return new Date().toLocaleTimeString();
    }

    function onFault(args) {
        live.faults++;
        const f = {
            kind: "fault",
            time: now(),
            source: String(args[0]),
            category: String(args[1]),
            keyword: String(args[2]),
            severity: String(args[3]),
            cleared: !!args[4],
            code: Number(args[5]),
            first: Number(args[6]),
            last: Number(args[6]),
            count: 1,
        };
        // A storm of the same fault collapses into one entry.
        const prev = live.pending.length ? live.pending[live.pending.length - 1] : live.newest;
        if (prev && prev.kind === "fault" && prev.source === f.source && prev.category === f.category &&
            prev.keyword === f.keyword && prev.severity === f.severity && prev.cleared === f.cleared &&
            prev.last + 1 === f.first) {
            prev.last = f.first;
            prev.count++;
            prev.time = f.time;
            prev.dirty = true;
            if (live.pending.indexOf(prev) < 0)
                live.pending.push(prev);
        } else {
            live.pending.push(f);
        }
        scheduleFlush();
    }

    function onLost(args) {
        const first = Number(args[1]);
        const last = Number(args[2]);
        live.lostNotices++;
        live.lostRecords += last >= first ? last - first + 1 : 0;
        live.pending.push({ kind: "lost", time: now(), source: String(args[0]), first: first, last: last });
        scheduleFlush();
    }

    function scheduleFlush() {
        if (!live.flushTimer)
            live.flushTimer = setTimeout(flushLive, 50);
    }

    function liveEntry(e) {
        const li = el("li", "fb-entry fb-entry-" + e.kind);
        li.dataset.kind = e.kind;
        li.dataset.source = e.source;
        const badge = el("span", "fb-badge");
        if (e.kind === "lost") {
            badge.classList.add("fb-badge-error");
            badge.appendChild(el("span", "fb-icon", "⚠")).setAttribute("aria-hidden", "true");
            badge.appendChild(el("span", "fb-badge-text", "LOST"));
            li.appendChild(badge);
            const n = e.last >= e.first ? e.last - e.first + 1 : 0;
            li.appendChild(el("span", "fb-entry-text", n
                ? n + (n === 1 ? " record" : " records") + " of source " + e.source +
                  " lost: sequences " + e.first + "–" + e.last
                : "records of source " + e.source + " lost (range unknown)"));
        } else {
            li.dataset.category = e.category;
            li.dataset.keyword = e.keyword;
            const cls = e.cleared ? "ok" : e.severity === "info" ? "info" : e.severity === "warning" ? "warning" : "error";
            badge.classList.add("fb-badge-" + cls);
            badge.appendChild(el("span", "fb-icon", e.cleared ? "✓" : "⚠")).setAttribute("aria-hidden", "true");
            badge.appendChild(el("span", "fb-badge-text", e.cleared ? "CLEAR" : e.severity.toUpperCase()));
            li.appendChild(badge);
            li.appendChild(el("span", "fb-entry-what", e.category + (e.keyword ? " " + e.keyword : "")));
            let text = "source " + e.source + ", event code 0x" + e.code.toString(16) + ", sequence " + e.first;
            if (e.count > 1)
                text = "×" + e.count + ", source " + e.source + ", sequences " + e.first + "–" + e.last;
            li.appendChild(el("span", "fb-entry-text", text));
        }
        li.appendChild(el("time", "fb-entry-time", e.time));
        return li;
    }

    function flushLive() {
        live.flushTimer = null;
        const list = $("live");
        for (const e of live.pending) {
            if (e.node) {
                const fresh = liveEntry(e);
                e.node.replaceWith(fresh);
                e.node = fresh;
            } else {
                e.node = liveEntry(e);
                list.insertBefore(e.node, list.firstChild);
            }
            e.dirty = false;
            if (e.node === list.firstChild)
                live.newest = e;
        }
        live.pending = [];
        while (list.childElementCount > LIVE_MAX)
            list.removeChild(list.lastElementChild);
        const s = $("live-summary");
        s.textContent = "Since this page opened: " + live.faults + (live.faults === 1 ? " fault" : " faults") +
            (live.lostNotices
                ? "; " + live.lostNotices + (live.lostNotices === 1 ? " loss notice" : " loss notices") +
                  " (" + live.lostRecords + " records lost)"
                : "; no losses") +
            ". Newest first" + (list.childElementCount >= LIVE_MAX ? ", the last " + LIVE_MAX + " entries." : ".");
        s.classList.toggle("fb-summary-error", live.lostNotices > 0);
    }

    /* ---- history ------------------------------------------------------- */

    function detailText(b64) {
        if (!b64)
            return "";
        let bytes;
        try {
            bytes = cockpit.base64_decode(String(b64));
        } catch (e) {
            return "";
        }
        let text = null;
        try {
            text = new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(bytes));
        } catch (e) {
            text = null;
        }
        // Printable text as it is; anything else (control characters,
        // binary) as hex.
        if (text !== null && !/[\u0000-\u001f\u007f-\u009f]/.test(text))
            return text.length > 120 ? text.slice(0, 120) + "…" : text;
        const hex = Array.prototype.map.call(bytes.slice(0, 48), function (x) {
            return ("0" + x.toString(16)).slice(-2);
        }).join(" ");
        return "hex " + hex + (bytes.length > 48 ? " …" : "");
    }

    function historyFilter() {
        return {
            category: $("history-category").value,
            keyword: $("history-keyword").value.trim().toLowerCase(),
        };
    }

    function matches(row, f) {
        if (f.category && row[2] !== f.category)
            return false;
        if (f.keyword && String(row[3]).toLowerCase().indexOf(f.keyword) < 0)
            return false;
        return true;
    }

    /* Reads rows after record id `after` until a page of matching rows is
     * full, the history ends, or HISTORY_CALLS calls were made (a filter
     * that matches little must not read the whole database per click). */
    function loadHistory(after, back) {
        if (history.busy) {
            // A click while a page is read: its page comes next.
            history.queued = [after, back];
            return;
        }
        if (!client) {
            history.loaded = false; // read again once connected
            $("history-status").textContent = "Not connected: the history is read once the daemon answers.";
            return;
        }
        const gen = generation;
        const f = historyFilter();
        history.busy = true;
        $("history-status").textContent = "Reading the history…";
        const rows = [];
        let cursor = after;
        let calls = 0;
        let end = false;
        const step = function () {
            calls++;
            return call(gen, ROOT, BRIDGE, "History", [cursor, HISTORY_CHUNK], "tu").then(function (reply) {
                const got = reply[0] || [];
                if (got.length === 0) {
                    end = true;
                    return null;
                }
                for (const r of got) {
                    cursor = Number(r[0]);
                    if (matches(r, f)) {
                        rows.push(r);
                        if (rows.length === HISTORY_PAGE)
                            return null;
                    }
                }
                if (calls >= HISTORY_CALLS)
                    return null;
                return step();
            });
        };
        step()
                .then(function () {
                    if (gen !== generation)
                        return;
                    history.after = after;
                    history.back = back;
                    history.next = end ? null : cursor;
                    history.loaded = true;
                    showHistory(rows, f, end, cursor);
                }, function (err) {
                    if (gen !== generation)
                        return;
                    $("history-status").textContent = err && err.name === "org.faultbridge.Bridge1.Error.Busy"
                        ? "The daemon is busy; try again."
                        : "Reading the history failed: " + errorText(err);
                })
                .finally(function () {
                    history.busy = false;
                    updatePager();
                    const q = history.queued;
                    history.queued = null;
                    if (q)
                        loadHistory(q[0], q[1]);
                });
    }

    function showHistory(rows, f, end, cursor) {
        const body = $("history").querySelector("tbody");
        const out = rows.map(function (r) {
            const tr = el("tr");
            const cleared = !!r[5];
            tr.dataset.record = String(r[0]);
            tr.dataset.category = String(r[2]);
            tr.dataset.keyword = String(r[3]);
            cell(tr, "Record", r[0], "fb-num");
            cell(tr, "Source", r[1]);
            cell(tr, "Category", r[2]);
            if (r[3])
                cell(tr, "Keyword", r[3]);
            else
                cell(tr, "Keyword", "").appendChild(el("span", "fb-muted", "none"));
            cell(tr, "Severity", r[4]);
            cell(tr, "Kind", cleared ? "clear" : "fault");
            cell(tr, "Event code", "0x" + Number(r[6]).toString(16), "fb-num");
            cell(tr, "Sequence", r[7], "fb-num");
            cell(tr, "Detail", detailText(r[9]), "fb-detail");
            return tr;
        });
        body.replaceChildren.apply(body, out);
        const filtered = f.category || f.keyword;
        let text;
        if (rows.length === 0 && end)
            text = filtered ? "No recorded faults match." : "No recorded faults (or no history configured).";
        else if (rows.length === 0)
            text = "No match up to record " + cursor + "; Next page reads on.";
        else if (rows.length === 1)
            text = "1 fault, record " + rows[0][0] + (end ? ", the newest." : ".");
        else
            text = rows.length + " faults, records " + rows[0][0] + "–" + rows[rows.length - 1][0] +
                (end ? ", the newest ones." : ".");
        $("history-status").textContent = text;
    }

    function updatePager() {
        $("history-first").disabled = history.busy || history.after === 0;
        $("history-prev").disabled = history.busy || history.back.length === 0;
        $("history-next").disabled = history.busy || history.next === null;
    }

    /* ---- start --------------------------------------------------------- */

    document.addEventListener("DOMContentLoaded", function () {
        $("history-filter").addEventListener("submit", function (ev) {
            ev.preventDefault();
            loadHistory(0, []);
        });
        $("history-first").addEventListener("click", function () {
            loadHistory(0, []);
        });
        $("history-prev").addEventListener("click", function () {
            const back = history.back.slice();
            const to = back.pop();
            loadHistory(to === undefined ? 0 : to, back);
        });
        $("history-next").addEventListener("click", function () {
            if (history.next !== null)
                loadHistory(history.next, history.back.concat([history.after]));
        });
        updatePager();
        connect();
    });
}());
