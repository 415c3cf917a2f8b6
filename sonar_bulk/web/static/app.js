// sonar-bulk's page: every decision is the server's (the same library as the CLI); this file
// only shows what it says and sends what the user does. Plain ES module, no dependencies.

const $ = (id) => document.getElementById(id);
const ROW_H = 30; // px, every grid row
const PAGE = 200; // rows fetched at a time
const OVERSCAN = 10;

const state = {
  sheet: null,
  summary: null,
  onlyErrors: false,
  code: null, // the rows of one issue code only (an entry of the issue list)
  total: 0,
  cache: new Map(), // position in the (filtered) list -> row
  loading: new Set(),
  active: { pos: 0, col: 0 },
  editing: null,
  wantFocus: false,
  busy: false,
  afterPlan: null,
  resumable: false,
  resultsOffset: 0,
  planOffset: 0,
  plan: null,
  step: 0,
  ran: false, // a run started or finished on this sheet: its step stays reachable
  results: false, // a run's results to show
};

// -- steps: Sheet → Columns → Review → Plan → Run → Results, one at a time -------------------

const STEPS = ["sheet", "columns", "review", "plan", "run", "results"];
const SAVED = "sonar-bulk-page";
// the Plan step's choices, kept with the step across a reload (the server keeps the sheet,
// its mapping and settings)
const KEPT = ["skip-invalid", "rate", "diff", "quiet-hours", "quiet-policy", "collect-events", "public-url"];

function reachable(step) {
  if (step === 0) return true;
  if (!state.sheet) return false;
  if (step <= 3) return true;
  if (step === 4) return !!state.plan || state.ran || state.busy; // Run: only after a plan
  return state.results;
}

function renderSteps() {
  for (const button of $("steps").querySelectorAll("button[data-step]")) {
    const step = Number(button.dataset.step);
    button.disabled = !reachable(step);
    button.classList.toggle("done", step < state.step && !button.disabled);
    if (step === state.step) button.setAttribute("aria-current", "step");
    else button.removeAttribute("aria-current");
  }
  $("back").disabled = state.step === 0;
  $("next").hidden = state.step === STEPS.length - 1;
  $("next").disabled = !reachable(state.step + 1);
}

function go(step, focus = true) {
  if (!reachable(step)) return;
  const moved = step !== state.step;
  state.step = step;
  STEPS.forEach((name, k) => ($(`step-${name}`).hidden = k !== step));
  renderSteps();
  remember();
  if (step === 2) renderGrid(); // drawn to the grid's height, now that it has one
  if (step === 4) {
    const f = state.plan;
    $("run-summary").textContent = f && f.to_run
      ? `The plan: ${plural(f.to_run, "row")} of ${f.file} to ${f.doing}, against ${WHERE[f.target_kind] || f.target}. Run checks it again and asks before anything is sent.`
      : "";
  }
  if (focus && moved) $(`h-${STEPS[step]}`).focus();
}

function remember() {
  const kept = {};
  for (const id of KEPT) kept[id] = $(id).type === "checkbox" ? $(id).checked : $(id).value;
  try {
    localStorage.setItem(SAVED, JSON.stringify({ file: state.sheet?.file || null, step: state.step, kept }));
  } catch {
    // storage off: a reload starts at the sheet's first step
  }
}

function recalled() {
  try {
    return JSON.parse(localStorage.getItem(SAVED) || "null");
  } catch {
    return null;
  }
}

// the plan's and the results' first three columns (status, reason, row) stay in view
const sticky = (k) => ["first", "second", "third"][k] || false;

// where a run goes, in words
const WHERE = { emulated: "the emulated Sonar (nothing leaves this machine)", sandbox: "Sonar's SANDBOX", live: "the LIVE Sonar account" };

function planGone() {
  state.plan = null;
  if (!state.busy) state.ran = false; // a run after a change starts from a new plan
  $("plan").replaceChildren();
  $("plan-table").hidden = true;
  renderSteps();
}

// What has the focus, as a selector that finds it again after its part of the page is drawn
// anew (a mapping row, an issue's buttons), and the place to fall back on when it is gone.
function focusMark() {
  const a = document.activeElement;
  if (!a || a === document.body) return null;
  if (a.id) return `#${CSS.escape(a.id)}`;
  for (const attr of ["data-fix", "data-delete", "data-code"]) {
    if (a.hasAttribute(attr)) return `[${attr}="${CSS.escape(a.getAttribute(attr))}"]`;
  }
  return null;
}

async function keepFocus(work, fallback) {
  const mark = focusMark();
  await work();
  const lost = !document.activeElement || document.activeElement === document.body;
  if (!lost) return;
  const again = (mark && document.querySelector(mark)) || (fallback && $(fallback));
  if (again && !again.closest("[hidden]")) again.focus();
}

async function api(path, body) {
  const init = body === undefined
    ? { credentials: "same-origin" }
    : {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      };
  const response = await fetch(path, init);
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new Error(data.error || `${response.status}`);
  return data;
}

function plural(n, word, many = `${word}s`) {
  return `${Number(n).toLocaleString()} ${n === 1 ? word : many}`;
}

function showError(error) {
  const text = error ? String(error.message || error).replace("(Ctrl-C)", "(Stop)") : "";
  $("error").textContent = text;
  if (text) $("error").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    node.setAttribute(k, v === true ? "" : v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- 1. sheet ---------------------------------------------------------------------------------

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function upload(file) {
  showError("");
  $("sheet-info").textContent = `Reading ${file.name}…`;
  try {
    const data = await readAsBase64(file);
    const described = await api("/api/upload", { name: file.name, data });
    loaded(described);
    // a workbook of several worksheets stays here, its picker in view; the rest goes on
    if ((described.sheets || []).length < 2) go(1);
  } catch (error) {
    $("sheet-info").textContent = "";
    state.sheet = null;
    state.summary = null;
    state.plan = null;
    state.ran = state.results = false;
    go(0, false);
    showError(error);
  }
}

function loaded(described) {
  $("review-status").textContent = ""; // what was done to the sheet before this one
  state.sheet = described;
  state.summary = described.summary;
  state.plan = null;
  const parts = [`${described.file}: ${plural(described.rows, "row")}`];
  if (described.format === "csv") {
    parts.push(`encoding ${described.encoding}`);
    parts.push(`delimiter ${JSON.stringify(described.delimiter)}`);
  } else if (described.sheet) {
    parts.push(`worksheet ${described.sheet}`);
  }
  if (described.remembered) parts.push("your earlier column choices were applied");
  $("sheet-info").textContent = parts.join(" · ");
  // what reading the file noticed: under the sheet, and on top of Columns (where an upload
  // lands), so it is seen
  const notes = [...(described.read_notes || [])];
  const auto = described.header_row_auto;
  if (auto) notes.push(`Row ${auto} holds the column names (a title line above it): "Header row" is set to ${auto}.`);
  for (const note of notes) $("sheet-info").append(el("span", { class: "read-note" }, note));
  $("sheet-notes").replaceChildren(...notes.map((note) => el("p", { class: "read-note" }, note)));
  const pick = $("sheet-pick");
  pick.replaceChildren(...described.sheets.map((name) => el("option", { value: name, selected: name === described.sheet }, name)));
  $("sheet-pick-row").hidden = described.sheets.length < 2;
  state.ran = state.results = false;
  $("plan").replaceChildren();
  $("plan-table").hidden = true;
  state.code = null;
  $("replace-column").replaceChildren(...described.headers.map((h, i) => el("option", { value: i }, h || `(column ${i + 1})`)));
  renderColumns();
  resetGrid();
  renderSummary();
  $("quiet-row").hidden = !described.sends;
  $("resend-row").hidden = !described.sends;
  $("events-row").hidden = !described.events;
  $("diff-row").hidden = described.kind !== "customers";
  $("diff").checked = false; // a plan is quick; comparing reads each row first
  showEstimate();
  state.resumable = !!described.resumable;
  $("run").hidden = state.resumable;
  $("resume").hidden = !state.resumable;
  $("progress-text").textContent = state.resumable ? "An earlier run of this file stopped before its end: Resume carries on from its journal." : "";
  $("progress").setAttribute("aria-valuenow", "0");
  $("progress").setAttribute("aria-valuemax", "0");
  $("bar").style.width = "0";
  renderSteps();
  remember();
}

// -- 2. columns -------------------------------------------------------------------------------

function commandLine() {
  const s = state.sheet;
  if (!s) return "";
  return s.command_line + ($("skip-invalid").checked ? " --skip-invalid" : "");
}

function renderSettings() {
  const s = state.sheet;
  $("header-row").value = s.settings.header_row ?? "";
  $("default-region").value = s.settings.default_region;
  $("extra-columns").checked = !!s.settings.extra_columns;
  $("extra-columns-row").hidden = !s.properties;
}

function choiceOptions(s, column) {
  const options = [[column.off, "Don't import"]];
  for (const f of s.fields) options.push([f.name, f.name + (f.required ? " (required)" : "")]);
  if (s.country_choice) options.push(["country", "region of the phones (country)"]);
  if (column.role === "label") options.push(["label", "label of its value column"]);
  if (s.properties) {
    const prop = column.choice.startsWith("property:") ? column.choice.split(":")[1] : column.header.trim() || `column_${column.index + 1}`;
    options.push([`property:${prop}`, `Custom property ${prop}`]);
  }
  return options;
}

function renderColumns() {
  const s = state.sheet;
  $("kind").replaceChildren(...s.kinds.map((k) => el("option", { value: k, selected: k === s.kind }, (s.kind_labels || {})[k] || k)));
  $("command").textContent = `Run will ${s.doing}.`;
  $("map-options").textContent = commandLine();
  renderSettings();
  const rows = s.columns.map((column) => {
    const i = column.index;
    const id = `map-${i}`;
    const select = el("select", { id, "data-header": column.header, "data-displaced": column.note.startsWith("not imported:") ? "1" : false });
    const options = choiceOptions(s, column);
    const isProperty = column.choice.startsWith("property:");
    // a property's type is its own select: the choice keeps property:<name>
    let current = isProperty ? `property:${column.choice.split(":")[1]}` : column.choice;
    if (current === "skip" || current === "") current = column.off;
    if (!options.some(([v]) => v === current)) options.push([current, current]);
    for (const [value, label] of options) select.append(el("option", { value, selected: value === current }, label));
    // arrow keys browse the choices (each one is a change in Chromium); Enter, leaving the
    // drop-down or a pick with the mouse applies one, so browsing never moves other columns
    const browsing = (e) => ["ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End"].includes(e.key);
    select.dataset.committed = current;
    select.addEventListener("keydown", (e) => {
      if (browsing(e)) select.dataset.browsing = "1";
      else if (e.key === "Escape" && select.dataset.browsing) {
        delete select.dataset.browsing; // browsed, not chosen: back to what applies
        select.value = select.dataset.committed;
      }
      else if (e.key === "Enter" && select.dataset.browsing) {
        delete select.dataset.browsing;
        saveMapping(e);
      }
    });
    select.addEventListener("change", (e) => { if (!select.dataset.browsing) saveMapping(e); });
    select.addEventListener("blur", (e) => {
      if (!select.dataset.browsing) return;
      delete select.dataset.browsing;
      setTimeout(() => saveMapping(e)); // once the focus has moved on, so it is kept
    });
    const tr = el("tr", { class: column.issues.some((x) => x.code === "column.duplicate") ? "conflict" : column.note ? "replaced" : false });
    const th = el("th", { scope: "row" });
    th.append(el("label", { for: id }, column.header || `(column ${column.letter})`));
    const samples = el("td", { class: "samples" });
    for (const value of column.samples) samples.append(el("span", { class: "sample" }, value));
    if (!column.samples.length) samples.append(el("span", { class: "muted" }, "(empty)"));
    const td = el("td");
    td.append(select);
    if (isProperty) {
      const type = el("select", { id: `type-${i}`, "aria-label": `Type of ${column.header || column.letter}`, "data-type-of": column.header });
      const now = column.choice.split(":")[2] || "";
      for (const t of ["", ...s.property_types]) type.append(el("option", { value: t, selected: t === now }, t || "any type"));
      type.addEventListener("change", saveMapping);
      td.append(type);
    }
    const feeds = el("td", { class: "feeds" });
    feeds.append(el("span", { class: column.role === "unknown" || column.role === "skip" ? "muted" : false }, column.target));
    if (column.note) feeds.append(el("span", { class: "note warning" }, column.note));
    for (const issue of column.issues) feeds.append(el("span", { class: `note ${issue.severity}` }, issue.message));
    if (column.fix) {
      const fix = el("button", { type: "button", class: "secondary fix" }, column.fix.label);
      fix.addEventListener("click", () => saveMapping(null, column.fix.choices));
      feeds.append(fix);
    }
    tr.append(th, samples, td, feeds);
    return tr;
  });
  $("mapping").replaceChildren(...rows);
}

function described(next) {
  state.sheet = { ...state.sheet, ...next };
  state.summary = next.summary;
  planGone();
  $("quiet-row").hidden = !next.sends;
  $("resend-row").hidden = !next.sends;
  $("events-row").hidden = !next.events;
  $("diff-row").hidden = next.kind !== "customers";
  renderColumns();
  resetGrid();
  renderSummary();
}

async function saveMapping(event, fix) {
  const choices = {};
  // a new kind starts from its own automatic matches, not from the old kind's fields
  if (!(event && event.target && event.target.id === "kind")) {
    for (const select of $("mapping").querySelectorAll("select[data-header]")) {
      // a column another column's choice replaced shows "Don't import" without anyone
      // choosing it: left to its own match, it comes back once that choice is undone
      if (select.dataset.displaced && select.value === select.dataset.committed) continue;
      choices[select.dataset.header] = select.value;
    }
    for (const type of $("mapping").querySelectorAll("select[data-type-of]")) {
      const header = type.dataset.typeOf;
      if (type.value && (choices[header] || "").startsWith("property:")) choices[header] += `:${type.value}`;
    }
    Object.assign(choices, fix || {});
  }
  await keepFocus(async () => {
    try {
      showError("");
      described(await api("/api/mapping", { kind: $("kind").value, choices }));
    } catch (error) {
      showError(error);
      renderColumns();
    }
  }, "h-columns");
}

async function saveSettings(event) {
  const settings = {};
  if (event.target.id === "header-row" || event.target.id === "review-header-row") {
    const value = event.target.value;
    settings.header_row = value === "" ? null : Number(value);
  }
  if (event.target.id === "default-region") settings.default_region = $("default-region").value.trim() || "US";
  if (event.target.id === "extra-columns") settings.extra_columns = $("extra-columns").checked;
  try {
    showError("");
    const next = await api("/api/settings", settings);
    if (event.target.id.endsWith("header-row")) loaded({ ...next, resumable: state.resumable });
    else described(next);
  } catch (error) {
    showError(error);
    renderSettings();
  }
}

// -- 3. review: a virtualized grid ----------------------------------------------------------

function columns() {
  const s = state.sheet;
  const cols = s.headers.map((h, i) => ({ label: h || `(column ${i + 1})`, index: i }));
  if (s.kind === "messages") cols.push({ label: "Message as sent", index: -1 });
  return cols;
}

function resetGrid() {
  state.cache.clear();
  state.loading.clear();
  state.active = { pos: 0, col: 0 };
  const cols = columns();
  renderHead();
  $("grid").setAttribute("aria-colcount", String(cols.length + 1));
  $("grid").style.setProperty("--cols", String(cols.length));
  const filter = $("code-filter");
  filter.hidden = !state.code;
  $("code-filter-text").textContent = state.code ? `Showing only the rows with ${state.code}.` : "";
  return fetchRows(0).then(renderGrid);
}

// the header cells, with the sheet's header-level issues (a column's) on them
function renderHead() {
  const sheetIssues = (state.summary && state.summary.sheet_issues) || [];
  const cells = [el("div", { role: "columnheader", class: "cell num" }, "Row")];
  for (const c of columns()) {
    const issues = sheetIssues.filter((i) => c.index >= 0 && i.column === c.index);
    const error = issues.some((i) => i.severity === "error");
    const cell = el("div", {
      role: "columnheader",
      class: "cell" + (error ? " err" : issues.length ? " warn" : ""),
      title: issues.map((i) => i.message).join("\n") || false,
    }, c.label);
    if (issues.length) {
      const id = `h-issue-${c.index}`;
      cell.setAttribute("aria-describedby", id);
      cell.append(el("span", { id, class: "sr-only" }, issues.map((i) => i.message).join(" ")));
    }
    cells.push(cell);
  }
  $("grid-head").replaceChildren(...cells);
}

async function fetchRows(offset) {
  const page = Math.floor(offset / PAGE) * PAGE;
  if (state.loading.has(page)) return;
  state.loading.add(page);
  try {
    const code = state.code ? `&code=${encodeURIComponent(state.code)}` : "";
    const data = await api(`/api/rows?offset=${page}&limit=${PAGE}&errors=${state.onlyErrors ? 1 : 0}${code}`);
    state.total = data.total;
    data.rows.forEach((row, k) => state.cache.set(page + k, row));
    state.summary = data.summary;
    renderSummary();
  } catch (error) {
    showError(error);
  } finally {
    state.loading.delete(page);
  }
}

function renderGrid() {
  const grid = $("grid");
  const body = $("grid-body");
  body.style.height = `${state.total * ROW_H}px`;
  grid.setAttribute("aria-rowcount", String(state.total + 1));
  const top = Math.max(0, grid.scrollTop - ROW_H);
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const count = Math.ceil(grid.clientHeight / ROW_H) + 2 * OVERSCAN;
  const last = Math.min(state.total, first + count);
  const missing = [];
  const rows = [];
  for (let pos = first; pos < last; pos++) {
    const row = state.cache.get(pos);
    if (!row) {
      missing.push(pos);
      continue;
    }
    rows.push(renderRow(pos, row));
  }
  const hadFocus = body.contains(document.activeElement) && !state.editing;
  body.replaceChildren(...rows);
  if (hadFocus) state.wantFocus = true; // redrawn under the keyboard: keep its place
  if (state.wantFocus) {
    const cell = cellAt(state.active.pos, state.active.col);
    if (cell) {
      state.wantFocus = false;
      cell.tabIndex = 0;
      cell.focus();
    }
  }
  if (missing.length) {
    Promise.all([...new Set(missing.map((p) => Math.floor(p / PAGE) * PAGE))].map(fetchRows)).then(() => {
      if (missing.some((p) => state.cache.has(p))) renderGrid();
    });
  }
  if (state.total === 0) body.replaceChildren(el("p", { class: "muted empty" }, state.onlyErrors ? "No rows with errors." : "No rows."));
}

function renderRow(pos, row) {
  const tr = el("div", { role: "row", class: "row" + (row.invalid ? " invalid" : ""), "aria-rowindex": pos + 2 });
  tr.style.top = `${pos * ROW_H}px`;
  tr.append(el("div", { role: "rowheader", class: "cell num" }, String(row.row)));
  columns().forEach((c, k) => {
    const issues = row.issues.filter((i) => i.column === c.index && c.index >= 0);
    const text = c.index >= 0 ? row.cells[c.index] ?? "" : row.message ? `${row.message.text} (${row.message.segments} SMS)` : "";
    const error = issues.some((i) => i.severity === "error");
    const cell = el("div", {
      role: "gridcell",
      class: "cell" + (error ? " err" : issues.length ? " warn" : "") + (c.index < 0 ? " rendered" : ""),
      tabindex: pos === state.active.pos && k === state.active.col ? 0 : -1,
      "data-pos": pos,
      "data-col": k,
      "aria-colindex": k + 2,
      "aria-invalid": issues.length ? "true" : false,
      "aria-readonly": c.index < 0 ? "true" : false,
      title: issues.map((i) => i.message).join("\n") || text || false,
    });
    cell.append(el("span", { class: "text" }, text));
    if (issues.length) {
      const id = `d-${row.index}-${c.index}`;
      cell.setAttribute("aria-describedby", id);
      cell.append(el("span", { id, class: "sr-only" }, issues.map((i) => i.message).join(" ")));
    }
    tr.append(cell);
  });
  return tr;
}

function renderSummary() {
  const s = state.summary;
  if (!s) return;
  $("counts").textContent = `${plural(s.rows, "row")} · ${s.valid.toLocaleString()} valid · ${s.invalid.toLocaleString()} invalid · ${plural(s.warnings, "warning")}`;
  // per code: a button that jumps to its first cell and shows only its rows, its fix in bulk
  // with a count, and deleting its rows; header-level issues are told as they are
  const items = (s.issues || []).filter((e) => !e.header).map((e) => {
    const li = el("li", { class: e.severity });
    const pressed = state.code === e.code ? "true" : "false";
    const label = `${e.code}: ${plural(e.count, "cell")}` + (e.rows !== e.count ? ` in ${plural(e.rows, "row")}` : "");
    li.append(el("button", { type: "button", class: "link", "data-code": e.code, "aria-pressed": pressed, title: e.example }, label));
    if (e.meaning) li.append(el("span", { class: "meaning" }, e.meaning));
    const actions = el("span", { class: "actions" });
    if (e.fix && e.fixable) actions.append(el("button", { type: "button", class: "secondary", "data-fix": e.code }, `${e.fix} (${e.fixable.toLocaleString()})`));
    actions.append(el("button", { type: "button", class: "secondary", "data-delete": e.code }, `Delete ${e.rows === 1 ? "its row" : `these ${plural(e.rows, "row")}`}`));
    li.append(actions);
    return li;
  });
  for (const issue of s.sheet_issues || []) items.push(el("li", { class: issue.severity }, issue.message));
  $("issue-list").replaceChildren(...(items.length ? items : [el("li", {}, "none")]));
  if (state.sheet) {
    // a title line above the headers: the "Header row" control right here
    const title = (s.sheet_issues || []).some((i) => i.message.includes('"Header row"')) || state.sheet.title_line;
    $("review-header-row-line").hidden = !title;
    $("review-header-row").value = state.sheet.settings.header_row ?? "";
  }
  if (document.getElementById("grid-head").childElementCount) renderHead();
}

// an issue's entry: only its rows, its first cell in focus
async function showCode(code) {
  const entry = (state.summary.issues || []).find((e) => e.code === code);
  state.code = state.code === code ? null : code;
  state.onlyErrors = false;
  $("only-errors").checked = false;
  $("grid").scrollTop = 0;
  renderSummary();
  await resetGrid();
  if (state.code && entry) {
    const col = Math.max(0, columns().findIndex((c) => c.index === entry.first.column));
    focusCell(0, col);
  }
}

// after a fix in bulk, a replace or a delete: the grid and the issues as the server has them
async function reviewed(data, text) {
  state.summary = data.summary;
  if (state.code && !(data.summary.issues || []).some((e) => e.code === state.code)) state.code = null;
  $("review-status").textContent = text;
  renderSummary();
  await resetGrid();
  planGone();
}

async function fixAll(code) {
  try {
    showError("");
    const data = await api("/api/fix", { code });
    await reviewed(data, `${plural(data.changed, "cell")} fixed (${code}).`);
  } catch (error) {
    showError(error);
  }
}

async function deleteRows(body, what) {
  try {
    showError("");
    const data = await api("/api/delete", body);
    await reviewed(data, `${plural(data.deleted, "row")} deleted (${what}): left out of the fixed sheet, the plan and the run.`);
  } catch (error) {
    showError(error);
  }
}

async function replaceAll(event) {
  event.preventDefault();
  try {
    showError("");
    const data = await api("/api/replace", {
      column: Number($("replace-column").value),
      find: $("replace-find").value,
      replace: $("replace-with").value,
      whole: $("replace-whole").checked,
    });
    await reviewed(data, `${plural(data.changed, "cell")} replaced.`);
  } catch (error) {
    showError(error);
  }
}

function focusCell(pos, col) {
  const cols = columns().length;
  pos = Math.max(0, Math.min(state.total - 1, pos));
  col = Math.max(0, Math.min(cols - 1, col));
  state.active = { pos, col };
  const grid = $("grid");
  const y = pos * ROW_H;
  const head = ROW_H;
  const before = grid.scrollTop;
  if (y < grid.scrollTop) grid.scrollTop = y;
  else if (y + ROW_H + head > grid.scrollTop + grid.clientHeight) grid.scrollTop = y + ROW_H + head - grid.clientHeight;
  let cell = cellAt(pos, col);
  if (!cell || grid.scrollTop !== before) {
    renderGrid();
    cell = cellAt(pos, col);
  }
  for (const other of grid.querySelectorAll("[role=gridcell][tabindex='0']")) other.tabIndex = -1;
  if (cell) {
    cell.tabIndex = 0;
    cell.focus();
    cell.scrollIntoView({ block: "nearest", inline: "nearest" });
  } else {
    state.wantFocus = true; // its rows are still loading: focus it once they are drawn
    grid.focus();
  }
}

function cellAt(pos, col) {
  return $("grid").querySelector(`[data-pos="${pos}"][data-col="${col}"]`);
}

function startEdit(cell, initial) {
  if (state.busy) {
    showError("A dry run or a run is going on: edits wait until it ends (or Stop it).");
    return;
  }
  const pos = Number(cell.dataset.pos);
  const col = columns()[Number(cell.dataset.col)];
  const row = state.cache.get(pos);
  if (!row || col.index < 0) return;
  const input = el("input", { type: "text", "aria-label": `Edit ${col.label}, row ${row.row}` });
  input.value = initial ?? row.cells[col.index] ?? "";
  state.editing = { pos, col: Number(cell.dataset.col) };
  cell.replaceChildren(input);
  input.focus();
  input.addEventListener("keydown", async (event) => {
    if (event.key === "Enter" || event.key === "Tab") {
      event.preventDefault();
      state.editing = null; // committed here, not again on blur
      await commit([{ index: row.index, column: col.index, value: input.value }]);
      focusCell(pos + (event.key === "Enter" ? 1 : 0), state.active.col + (event.key === "Tab" ? 1 : 0));
    } else if (event.key === "Escape") {
      state.editing = null;
      renderGrid();
      focusCell(pos, state.active.col);
    }
    event.stopPropagation();
  });
  input.addEventListener("blur", async () => {
    if (state.editing && state.editing.pos === pos) {
      state.editing = null;
      if (input.value !== (row.cells[col.index] ?? "")) {
        await commit([{ index: row.index, column: col.index, value: input.value }]);
      } else {
        renderGrid();
      }
    }
  });
}

async function commit(changes) {
  try {
    showError("");
    const data = await api("/api/edit", { changes });
    state.summary = data.summary;
    if (state.onlyErrors || state.code) {
      // a fixed row leaves the filtered list: keep the view where it is, reload the window
      state.cache.clear();
      await fetchRows(Math.max(0, state.active.pos - 5));
    } else {
      const byIndex = new Map(data.rows.map((r) => [r.index, r]));
      for (const [pos, row] of state.cache) {
        if (byIndex.has(row.index)) state.cache.set(pos, byIndex.get(row.index));
      }
      // other rows' issues may change too (duplicates): refresh what is cached, lazily
      const cached = [...new Set([...state.cache.keys()].map((p) => Math.floor(p / PAGE) * PAGE))];
      state.cache.clear();
      await Promise.all(cached.map(fetchRows));
    }
    renderSummary();
    planGone();
  } catch (error) {
    showError(error);
  }
  renderGrid();
}

function onGridKey(event) {
  if (state.editing) return;
  if (event.key === "Tab" && event.shiftKey && event.target !== $("grid")) {
    // Shift+Tab from a cell leaves the grid: its box, a tab stop of its own that hands the
    // focus to the active cell, is skipped on the way out (a keyboard trap otherwise)
    const grid = $("grid");
    grid.tabIndex = -1;
    setTimeout(() => (grid.tabIndex = 0));
    return;
  }
  const { pos, col } = state.active;
  const page = Math.max(1, Math.floor($("grid").clientHeight / ROW_H) - 1);
  const moves = {
    ArrowDown: [pos + 1, col], ArrowUp: [pos - 1, col], ArrowRight: [pos, col + 1], ArrowLeft: [pos, col - 1],
    PageDown: [pos + page, col], PageUp: [pos - page, col], Home: [pos, 0], End: [pos, columns().length - 1],
  };
  if (event.ctrlKey && event.key === "Home") moves.Home = [0, 0];
  if (event.ctrlKey && event.key === "End") moves.End = [state.total - 1, columns().length - 1];
  if (moves[event.key]) {
    event.preventDefault();
    focusCell(...moves[event.key]);
    return;
  }
  const cell = document.activeElement?.closest?.("[role=gridcell]");
  if (!cell) return;
  if (event.key === "Enter" || event.key === "F2") {
    event.preventDefault();
    startEdit(cell);
  } else if (event.key.length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    startEdit(cell, event.key);
  }
}

async function onPaste(event) {
  if (state.editing) return;
  const text = event.clipboardData?.getData("text/plain");
  if (!text) return;
  event.preventDefault();
  const lines = text.replace(/\r\n?/g, "\n").replace(/\n$/, "").split("\n").map((l) => l.split("\t"));
  const start = state.active.pos;
  const last = Math.min(state.total, start + lines.length) - 1;
  const pages = new Set();
  for (let pos = start; pos <= last; pos += PAGE) pages.add(Math.floor(pos / PAGE) * PAGE);
  pages.add(Math.floor(last / PAGE) * PAGE);
  await Promise.all([...pages].filter((p) => !state.cache.has(p) || !state.cache.has(Math.min(last, p + PAGE - 1))).map(fetchRows));
  const cols = columns();
  const changes = [];
  let beyond = 0;
  lines.forEach((cells, dy) => {
    const row = state.cache.get(start + dy);
    if (!row) {
      beyond += 1;
      return;
    }
    cells.forEach((value, dx) => {
      const c = cols[state.active.col + dx];
      if (c && c.index >= 0) changes.push({ index: row.index, column: c.index, value });
    });
  });
  if (changes.length) await commit(changes);
  focusCell(start, state.active.col);
  if (beyond) showError(`${plural(beyond, "pasted line")} went past the last row and ${beyond === 1 ? "was" : "were"} not used.`);
}

// -- 4. plan, 5. run, 6. results -------------------------------------------------------------

function runOptions() {
  const options = { skip_invalid: $("skip-invalid").checked, rate: Number($("rate").value) };
  if (state.sheet && state.sheet.sends && $("quiet-hours").value.trim()) {
    options.quiet_hours = $("quiet-hours").value.trim();
    options.quiet_policy = $("quiet-policy").value;
  }
  if (state.sheet && state.sheet.sends && $("resend").checked) options.resend = true;
  if (state.sheet && state.sheet.events && Number($("collect-events").value) > 0) {
    options.collect_events = Number($("collect-events").value);
    if ($("public-url").value.trim()) options.public_url = $("public-url").value.trim();
  }
  return options;
}

// how long comparing with Sonar takes: one read per row at the rate chosen
function showEstimate() {
  const rows = state.sheet ? state.sheet.rows : 0;
  const rate = Number($("rate").value);
  let text = "";
  if (rows && rate > 0) {
    const seconds = Math.ceil(rows / rate);
    const time = seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
    text = `about ${time} for ${plural(rows, "row")} at ${rate}/s`;
  } else if (rows) text = `${plural(rows, "read")}, as fast as Sonar answers`;
  $("diff-estimate").textContent = text && `(${text})`;
}

function showPlan(f) {
  const out = $("plan");
  const lines = [];
  if (f.stopped) lines.push("The plan was cancelled before it ended: Sonar's records were not compared.");
  lines.push(`Plan for ${f.file}, against ${WHERE[f.target_kind] || f.target}: ${plural(f.to_run, "row")} of ${f.rows.toLocaleString()} to send (${f.doing}). Nothing was sent.`);
  const diff = Object.entries(f.diff);
  if (diff.length) lines.push("Changes: " + diff.map(([k, n]) => `${n.toLocaleString()} ${k}`).join(", "));
  if (f.unchanged) lines.push(`${plural(f.unchanged, "row is", "rows are")} unchanged and will not be sent.`);
  if (f.sent_before) lines.push(`${plural(f.sent_before, "row was", "rows were")} sent before (the journal): not sent again.`);
  if (f.guarded) {
    lines.push(`${plural(f.guarded, "row goes", "rows go")} to people an earlier run of this sheet texted, and changed since: not sent again.`);
    for (const line of f.guarded_rows || []) lines.push(`  ${line}`);
  }
  if (f.sends) {
    lines.push(`Recipients: ${f.recipients.toLocaleString()}` + (f.unsubscribed != null ? `; known unsubscribed: ${f.unsubscribed.toLocaleString()}` : ""));
    if (f.first_campaign) lines.push(`First: campaign ${f.first_campaign} to ${f.first_to}`);
    if (f.segments) lines.push(`SMS segments in the sheet: ${f.segments.toLocaleString()}, at most ${f.max_segments} per message`);
    lines.push(f.seconds ? `Sending takes about ${Math.ceil(f.seconds)} s at ${f.rate}/s` : "Sending goes as fast as Sonar answers");
    if (f.scheduled) lines.push(`Scheduled sends from ${f.scheduled[0]} to ${f.scheduled[1]}`);
    if (f.held) lines.push(`Held by quiet hours: ${plural(f.held, "row")}`);
  }
  const texts = f.texts || {};
  if (texts.texts) {
    const encodings = ["GSM-7", "UCS-2"].filter((e) => texts[e]).map((e) => `${texts[e].toLocaleString()} ${e}`);
    lines.push(`${plural(texts.texts, "text")}, ${plural(texts.segments, "segment")}: ${encodings.join(", ")}`);
  }
  // each row as it will be sent: the table below (loadPlanRows)
  out.replaceChildren(...lines.map((t) => el("p", {}, t)));
}

// the plan, row by row: what each row will send (a message's final text), in a box of its own
async function loadPlanRows(more) {
  if (!more) state.planOffset = 0;
  const data = await api(`/api/plan/rows?offset=${state.planOffset}&limit=100`);
  const head = $("plan-head");
  head.replaceChildren(el("tr", {}, ""));
  head.firstChild.append(...data.columns.map((n, k) => el("th", { scope: "col", class: sticky(k) }, n)));
  const rows = data.rows.map((r) => {
    const tr = el("tr", { class: `status-${r.status}` });
    tr.append(...r.values.map((v, k) => el("td", { class: sticky(k), title: v && v.length > 40 ? v : false }, v ?? "")));
    return tr;
  });
  if (more) $("plan-body").append(...rows);
  else $("plan-body").replaceChildren(...rows);
  state.planOffset += data.rows.length;
  $("plan-more").hidden = state.planOffset >= data.total;
  $("plan-file").textContent = data.file ? `(${data.file}: every row, as it will be sent)` : "";
  $("plan-table").hidden = false;
}

async function startPlan(diff, then, resume = state.resumable) {
  $("plan").replaceChildren(el("p", {}, "Planning…"));
  $("plan-table").hidden = true;
  state.plan = null;
  state.afterPlan = then || null;
  try {
    showError("");
    // a resumed run's plan leaves out the rows its journal shows done: its count is the
    // rows really left
    await api("/api/plan", { ...runOptions(), diff, resume: !!resume });
    follow("plan");
  } catch (error) {
    $("plan").replaceChildren();
    showError(error);
  }
}

function dryRun() {
  return startPlan($("diff").checked && !$("diff-row").hidden, null);
}

function askToRun(resume) {
  // always a fresh, quick plan (no diff): the count is what this run will really send
  startPlan(false, (f) => confirmRun(f, resume), resume);
}

function confirmRun(f, resume) {
  if (!f.to_run) {
    showError(f.sent_before ? "Nothing left to send: every row was sent before (see the journal)." : "Nothing to run.");
    return;
  }
  const what = f.sends ? `send to ${plural(f.recipients, "recipient")}` : `${f.doing}, ${plural(f.to_run, "row")},`;
  const left = resume && f.rows > f.to_run ? ` (${plural(f.rows - f.to_run, "row")} of ${f.rows.toLocaleString()} ${f.rows - f.to_run === 1 ? "is" : "are"} done or held: not run again)` : "";
  const where = WHERE[f.target_kind] || f.target;
  const again = runOptions().resend ? " People an earlier run texted are texted again." : "";
  $("confirm-text").textContent = `${resume ? "Resume: " : ""}This will ${what} from ${f.file} against ${where}${left}.${again}` + (f.first_text ? ` First message: “${f.first_text}”` : "");
  const dialog = $("confirm");
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-no").focus();
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "yes") return;
    try {
      showError("");
      await api("/api/run", { ...runOptions(), resume, confirm: true });
      follow("run");
    } catch (error) {
      showError(error);
    }
  }, { once: true });
}

// a plan shows its progress and a Cancel on its own step; a run, on the Run step, with Stop
function follow(mode) {
  state.busy = true;
  renderSteps();
  $("run").hidden = true;
  $("dry-run").disabled = true;
  $("stop").hidden = mode === "plan";
  $("plan-cancel").hidden = mode !== "plan";
  $("resume").hidden = true;
  const source = new EventSource("/api/progress/stream");
  source.onmessage = (event) => {
    const p = JSON.parse(event.data);
    showProgress(p);
    if (p.state !== "running" && p.state !== "stopping") {
      source.close();
      finished(p);
    }
  };
  source.onerror = () => {
    source.close();
    api("/api/progress").then((p) => (p.state === "running" || p.state === "stopping" ? follow(p.mode) : finished(p)));
  };
}

function showProgress(p) {
  // one Stop: the requests in flight finish (the server ignores a second one too)
  $("stop").disabled = $("plan-cancel").disabled = p.state === "stopping";
  const bar = $("progress");
  bar.setAttribute("aria-valuemax", String(p.total || 0));
  bar.setAttribute("aria-valuenow", String(p.done || 0));
  $("bar").style.width = p.total ? `${(100 * p.done) / p.total}%` : "0";
  const eta = p.eta ? `, about ${Math.ceil(p.eta)} s left` : "";
  const flags = [p.failed && p.mode !== "plan" ? `${p.failed} failed` : "", p.throttled ? "throttled by Sonar" : "", p.state === "stopping" ? "stopping…" : ""].filter(Boolean).join(", ");
  if (p.phase === "events") {
    $("progress-text").textContent = `Sent. Collecting webhook events: ${plural(p.events_received || 0, "event")} received; Stop ends the wait and keeps them.`;
    return;
  }
  if (p.mode === "plan") {
    const cancelling = p.state === "stopping" ? " (cancelling…)" : "";
    $("plan-progress").textContent = p.total && p.done
      ? `Comparing with Sonar: ${p.done.toLocaleString()} / ${plural(p.total, "row")} read${eta}${cancelling}`
      : `Planning…${cancelling}`;
    return;
  }
  $("progress-text").textContent = `${p.done.toLocaleString()} / ${plural(p.total, "row")}, ${p.rate}/s${eta}${flags ? ` (${flags})` : ""}`;
}

function finished(p, reload = false) {
  state.busy = false;
  renderSteps();
  $("stop").hidden = true;
  $("plan-cancel").hidden = true;
  $("stop").disabled = $("plan-cancel").disabled = false;
  $("plan-progress").textContent = "";
  $("dry-run").disabled = false;
  if (p.state === "failed") {
    $("run").hidden = false;
    $("plan").replaceChildren();
    $("plan-table").hidden = true;
    showError(p.error);
    if (!reload && (!document.activeElement || document.activeElement === document.body)) $("error").focus();
    return;
  }
  if (p.mode === "plan") {
    $("run").hidden = !!state.resumable;
    $("resume").hidden = !state.resumable;
    $("progress-text").textContent = "";
    state.plan = p.facts;
    showPlan(p.facts);
    loadPlanRows(false).catch(showError);
    renderSteps();
    const then = state.afterPlan;
    state.afterPlan = null;
    if (then && !p.facts.stopped) then(p.facts);
    else if (!reload && (!document.activeElement || document.activeElement === document.body)) {
      $("plan").focus(); // "Make the plan" was disabled while planning: on to what it made
    }
    return;
  }
  state.resumable = !!p.resumable;
  state.ran = true;
  state.results = true;
  // one plan, one run: the plan shown was this run's; Run plans again before it asks
  state.plan = null;
  $("plan").replaceChildren(el("p", { class: "muted" }, "The last plan was run. Make the plan again to see what another run would do."));
  $("plan-table").hidden = true;
  $("run").hidden = state.resumable;
  showProgress(p);
  const counts = Object.entries(p.counts || {}).map(([k, n]) => `${n.toLocaleString()} ${k}`).join(", ");
  const why = (p.stopped || "").replace("not sent: ", "").replace("(Ctrl-C)", "(Stop)");
  $("progress-text").textContent = (p.stopped ? `Stopped: ${why}. ` : "Done: ") + counts;
  $("resume").hidden = !p.resumable;
  $("dl-failed").hidden = !p.failed_file;
  api("/api/info").then((info) => ($("dl-events").hidden = !info.progress.events));
  $("result-counts").textContent = (p.stopped ? "Stopped: " : "Done: ") + counts;
  const filter = $("status-filter");
  const total = Object.values(p.counts || {}).reduce((a, b) => a + b, 0);
  filter.replaceChildren(
    el("option", { value: "" }, `all rows (${total.toLocaleString()})`),
    ...Object.entries(p.counts || {}).map(([s, n]) => el("option", { value: s }, `${s} (${n.toLocaleString()})`)),
  );
  state.resultsOffset = 0;
  loadResults(false);
  renderSteps();
  if (!reload && !p.stopped) go(5); // done: its results; stopped: Resume, on this step
}

async function loadResults(more) {
  if (!more) state.resultsOffset = 0;
  const status = $("status-filter").value;
  const data = await api(`/api/results?offset=${state.resultsOffset}&limit=100&status=${encodeURIComponent(status)}`);
  const head = $("results-head");
  // the server names the columns (status and reason first); the first two stay in view
  head.replaceChildren(el("tr", {}, ""));
  head.firstChild.append(...data.columns.map((n, k) => el("th", { scope: "col", class: sticky(k) }, n)));
  const body = $("results-body");
  const rows = data.rows.map((r) => {
    const tr = el("tr", { class: `status-${r.status}` });
    tr.append(...r.values.map((v, k) => el("td", { class: sticky(k), title: k === 1 && v ? v : false }, v ?? "")));
    return tr;
  });
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  state.resultsOffset += data.rows.length;
  $("results-more").hidden = state.resultsOffset >= data.total;
}

// -- wiring ------------------------------------------------------------------------------------

function wire() {
  $("file").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer?.files?.[0];
    if (file) upload(file);
  });
  $("sheet-pick").addEventListener("change", async (e) => {
    try { loaded(await api("/api/reopen", { sheet: e.target.value })); } catch (error) { showError(error); }
  });
  $("kind").addEventListener("change", saveMapping);
  $("issue-list").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (!button || state.busy) return;
    if (button.dataset.code) showCode(button.dataset.code);
    else if (button.dataset.fix) keepFocus(() => fixAll(button.dataset.fix), "h-issues");
    else if (button.dataset.delete) keepFocus(() => deleteRows({ code: button.dataset.delete }, button.dataset.delete), "h-issues");
  });
  $("show-all").addEventListener("click", () => showCode(state.code));
  $("replace-form").addEventListener("submit", replaceAll);
  $("delete-row").addEventListener("click", () => {
    const row = state.cache.get(state.active.pos);
    if (row) keepFocus(() => deleteRows({ indexes: [row.index] }, `row ${row.row}`), "grid");
  });
  $("only-errors").addEventListener("change", (e) => {
    state.code = null;
    state.onlyErrors = e.target.checked;
    $("grid").scrollTop = 0;
    resetGrid();
  });
  const grid = $("grid");
  let pending = false;
  grid.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (!state.editing) renderGrid(); });
  });
  grid.addEventListener("keydown", onGridKey);
  grid.addEventListener("paste", onPaste);
  grid.addEventListener("dblclick", (e) => {
    const c = e.target.closest("[role=gridcell]");
    const live = c && cellAt(Number(c.dataset.pos), Number(c.dataset.col));
    if (live && !state.editing) startEdit(live);
  });
  grid.addEventListener("click", (e) => {
    const c = e.target.closest("[role=gridcell]");
    if (c && !state.editing) focusCell(Number(c.dataset.pos), Number(c.dataset.col));
  });
  grid.addEventListener("focus", (e) => {
    if (e.target === grid && state.total && !state.wantFocus) focusCell(state.active.pos, state.active.col);
  });
  $("dry-run").addEventListener("click", () => dryRun());
  $("run").addEventListener("click", () => askToRun(false));
  $("resume").addEventListener("click", () => askToRun(true));
  const stop = async () => { try { showProgress(await api("/api/stop", {})); } catch (error) { showError(error); } };
  $("stop").addEventListener("click", stop);
  $("plan-cancel").addEventListener("click", stop);
  $("plan-more").addEventListener("click", () => loadPlanRows(true).catch(showError));
  $("rate").addEventListener("input", showEstimate);
  $("status-filter").addEventListener("change", () => loadResults(false));
  $("results-more").addEventListener("click", () => loadResults(true));
  for (const id of ["header-row", "review-header-row", "default-region", "extra-columns"]) $(id).addEventListener("change", saveSettings);
  $("skip-invalid").addEventListener("change", () => { if (state.sheet) $("map-options").textContent = commandLine(); });
  for (const id of ["skip-invalid", "rate", "quiet-hours", "quiet-policy", "resend"]) {
    $(id).addEventListener("change", () => { if (!state.busy) planGone(); });
  }
  for (const id of KEPT) $(id).addEventListener("change", remember);
  $("steps").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-step]");
    if (button) go(Number(button.dataset.step));
  });
  $("back").addEventListener("click", () => go(state.step - 1));
  $("next").addEventListener("click", () => go(state.step + 1));
}

async function start() {
  wire();
  try {
    const info = await api("/api/info");
    $("target").textContent = `Runs go to ${info.target}.`;
    // a reload comes back to where the user was: the server kept the sheet and its mapping,
    // this browser the step and the Plan step's choices
    const saved = recalled();
    const same = info.sheet && saved && saved.file === info.sheet.file;
    if (same) {
      for (const [id, value] of Object.entries(saved.kept || {})) {
        if (!$(id)) continue;
        if ($(id).type === "checkbox") $(id).checked = !!value;
        else $(id).value = value;
      }
    }
    if (info.sheet) loaded({ ...info.sheet, summary: info.summary, resumable: info.resumable });
    if (same) {
      for (const [id, value] of Object.entries(saved.kept || {})) {
        if ($(id) && $(id).type === "checkbox") $(id).checked = !!value; // loaded() sets diff
      }
      $("map-options").textContent = commandLine();
    }
    if (info.progress.facts && info.progress.facts.rate !== undefined && !same) $("rate").value = info.progress.facts.rate;
    let step = info.sheet ? (same ? Number(saved.step) || 0 : 1) : 0;
    if (info.progress.state === "running" || info.progress.state === "stopping") {
      follow(info.progress.mode);
      step = info.progress.mode === "plan" ? 3 : 4;
    } else if (info.sheet && info.progress.state === "done") finished(info.progress, true); // a reload
    while (step > 0 && !reachable(step)) step -= 1;
    go(step, false);
  } catch (error) {
    showError(error);
  }
}

start();
