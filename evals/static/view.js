// reasoner view: the page's script (inlined by evals/view.py). No libraries, no network: the run's index is one
// JSON block; each problem's tree is a JSON block of its own, parsed and drawn only when the problem is opened.
"use strict";
(function () {
  const $ = (sel, el) => (el || document).querySelector(sel);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]);
  const num = (x, d) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d === undefined ? 3 : d));
  const pct = (x) => (x === null || x === undefined ? "–" : Math.round(100 * x) + "%");
  const INDEX = JSON.parse($("#index").textContent);
  const PROBLEMS = INDEX.problems;
  const BY_ID = new Map(PROBLEMS.map((p, i) => [String(p.id), i]));
  const ROLE_COLORS = { draft: "#1c7ed6", target: "#d9480f", verifier: "#7048e8", drafter: "#0ca678", code: "#2f9e44" };
  const details = new Map();
  let sortKey = "index", sortDesc = false, current = null;

  function roleColor(role) {
    if (ROLE_COLORS[role]) return ROLE_COLORS[role];
    let h = 0;
    for (const c of String(role)) h = (h * 31 + c.charCodeAt(0)) % 360;
    return "hsl(" + h + ",55%,45%)";
  }
  function detail(i) {
    if (!details.has(i)) details.set(i, JSON.parse(document.getElementById("p-" + i).textContent));
    return details.get(i);
  }
  function verdictMark(p) {
    if (p.error) return '<span class="mark-err" title="not attempted">–</span>';
    if (p.correct === true) return '<span class="mark-ok" title="correct">✓</span>';
    if (p.correct === false) return '<span class="mark-bad" title="wrong">✗</span>';
    return '<span class="mark-err" title="no reference">?</span>';
  }

  // ---------------------------------------------------------------------------------------------- the list
  function filtered() {
    const q = $("#q").value.trim().toLowerCase();
    const verdict = $("#verdict").value;
    const amin = Number($("#amin").value) / 100, amax = Number($("#amax").value) / 100;
    const limitAccept = amin > 0 || amax < 1;
    const keep = [];
    PROBLEMS.forEach((p, i) => {
      if (verdict === "correct" && p.correct !== true) return;
      if (verdict === "wrong" && (p.correct !== false || p.error)) return;
      if (verdict === "error" && !p.error) return;
      if (limitAccept && (p.accept === null || p.accept < amin - 1e-9 || p.accept > amax + 1e-9)) return;
      if (q && ![p.id, p.problem, p.answer, p.reference].some((s) => String(s === null ? "" : s).toLowerCase().includes(q))) return;
      keep.push(i);
    });
    if (sortKey !== "index") {
      const v = (i) => (PROBLEMS[i][sortKey] === null || PROBLEMS[i][sortKey] === undefined ? -1 : PROBLEMS[i][sortKey]);
      keep.sort((a, b) => v(a) - v(b) || a - b);
    }
    if (sortDesc) keep.reverse();
    return keep;
  }
  function renderList() {
    const rows = filtered();
    $("#count").textContent = rows.length + " of " + PROBLEMS.length;
    $("#list tbody").innerHTML = rows
      .map((i) => {
        const p = PROBLEMS[i];
        return (
          '<tr class="item' + (i === current ? " sel" : "") + '" data-i="' + i + '" title="' + esc(p.problem) + '"><td>' +
          verdictMark(p) + "</td><td>" + esc(p.id) + '</td><td class="num">' + p.tokens + '</td><td class="num">' +
          num(p.seconds, 2) + '</td><td class="num">' + pct(p.accept) + "</td></tr>"
        );
      })
      .join("");
  }

  // ---------------------------------------------------------------------------------------------- the summary
  function summaryView() {
    const s = INDEX.summary;
    const r = INDEX.recipe || {};
    const n = PROBLEMS.length;
    const correct = PROBLEMS.filter((p) => p.correct === true).length;
    const cells = [];
    const cell = (k, v) => cells.push("<div><span>" + esc(k) + "</span><b>" + v + "</b></div>");
    cell("recipe", esc((s && s.recipe) || r.name || "–"));
    if (s && s.suite) cell("suite", esc([s.suite.name, s.suite.difficulty, s.suite.seed !== undefined ? "seed " + s.suite.seed : ""].filter(Boolean).join(" · ")));
    if (r.search) cell("search", esc(r.search.method + (r.search.n ? " n=" + r.search.n : "") + (r.search.width ? " width=" + r.search.width : "") + (r.search.vote ? " · " + r.search.vote + " vote" : "")));
    if (r.verifier && r.verifier.type !== "none") cell("verifier", esc(r.verifier.type + (r.verifier.aggregate ? " · " + r.verifier.aggregate : "")));
    if (r.step_speculation) cell("step speculation", esc(r.step_speculation.acceptor + " · threshold " + r.step_speculation.threshold));
    cell("problems", s ? s.n : n);
    cell("accuracy", num(s ? s.accuracy : correct / Math.max(1, n)) + " (" + (s ? s.correct : correct) + ")");
    if (s && s.errors) cell("not attempted", s.errors);
    if (s && s.metrics) for (const [k, v] of Object.entries(s.metrics)) if (k !== "samples") cell(k, num(v));
    if (s) cell("seconds / problem", num(s.s_per_problem));
    if (s && s.per_problem) for (const [role, v] of Object.entries(s.per_problem.tokens || {})) cell(role + " tokens / problem", num(v, 1));
    if (s && s.steps_total) cell("draft steps accepted", s.steps_accepted + " of " + s.steps_total + " (" + pct(s.steps_accepted / s.steps_total) + ")");
    if (s && s.kv_tokens_peak !== undefined) cell("KV tokens, peak", num(s.kv_tokens_peak, 0));
    let html = "<h2>" + esc(INDEX.title) + "</h2>";
    if (INDEX.source) html += '<div class="note">' + esc(INDEX.source) + "</div>";
    if (!s && INDEX.source) html += '<p class="note">No summary.json: the run has not finished. The numbers below are of the rows written so far.</p>';
    html += '<div class="card kv">' + cells.join("") + "</div>";
    html += "<h3>Accuracy vs compute</h3>" + plot(s);
    if (INDEX.recipe) html += "<h3>Recipe</h3><details><summary>the recipe, overrides applied</summary><pre>" + esc(JSON.stringify(INDEX.recipe, null, 1)) + "</pre></details>";
    html += '<p class="note">Open a problem from the list (or <code>view.html#&lt;problem id&gt;</code>) to see its search tree.</p>';
    return html;
  }

  // accuracy within a compute budget: the share of all problems solved with at most x generated tokens, and the
  // run's pass@k / maj@k / weighted@k with k of its samples costing about k / samples of the mean
  function plot(s) {
    const W = 560, H = 280, L = 48, R = 16, T = 14, B = 38;
    const n = PROBLEMS.length;
    if (!n) return '<p class="note">no problems</p>';
    const costs = PROBLEMS.map((p) => [p.tokens, p.correct === true]).sort((a, b) => a[0] - b[0]);
    const maxX = Math.max(1, costs[costs.length - 1][0]);
    const mean = costs.reduce((a, c) => a + c[0], 0) / n;
    const x = (v) => L + ((W - L - R) * v) / maxX, y = (v) => T + (H - T - B) * (1 - v);
    let d = "M" + x(0) + "," + y(0), solved = 0;
    for (const [c, ok] of costs) {
      d += " H" + x(c).toFixed(1);
      if (ok) { solved += 1; d += " V" + y(solved / n).toFixed(1); }
    }
    d += " H" + x(maxX);
    const g = [];
    for (let k = 0; k <= 4; k++) {
      const v = (maxX * k) / 4, a = k / 4;
      g.push('<line x1="' + x(v) + '" x2="' + x(v) + '" y1="' + T + '" y2="' + (H - B) + '" stroke="#eee"/>');
      g.push('<text x="' + x(v) + '" y="' + (H - B + 14) + '" text-anchor="middle">' + Math.round(v) + "</text>");
      g.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y(a) + '" y2="' + y(a) + '" stroke="#eee"/>');
      g.push('<text x="' + (L - 6) + '" y="' + (y(a) + 4) + '" text-anchor="end">' + a.toFixed(2) + "</text>");
    }
    g.push('<text x="' + (L + (W - L - R) / 2) + '" y="' + (H - 4) + '" text-anchor="middle">generated tokens per problem (all roles)</text>');
    g.push('<text transform="translate(12,' + (T + (H - T - B) / 2) + ') rotate(-90)" text-anchor="middle">accuracy</text>');
    const legend = ['<span><span class="sw" style="background:#1c7ed6"></span>solved within a budget of x tokens</span>'];
    const m = (s && s.metrics) || {};
    const samples = m.samples || 0;
    if (samples > 1) {
      const pts = Object.keys(m).filter((k) => k.startsWith("pass@")).map((k) => [Number(k.slice(5)), m[k]]).sort((a, b) => a[0] - b[0]);
      if (pts.length) {
        g.push('<polyline fill="none" stroke="#0ca678" stroke-dasharray="4 3" points="' + pts.map(([k, v]) => x((mean * k) / samples) + "," + y(v)).join(" ") + '"/>');
        for (const [k, v] of pts) g.push('<circle cx="' + x((mean * k) / samples) + '" cy="' + y(v) + '" r="3" fill="#0ca678"><title>pass@' + k + " " + num(v) + "</title></circle>");
        legend.push('<span><span class="sw" style="background:#0ca678"></span>pass@k (k of ' + samples + " samples ≈ k/" + samples + " of the cost)</span>");
      }
      for (const [key, color] of [["maj@", "#ae3ec9"], ["weighted@", "#f08c00"]]) {
        const k = Object.keys(m).find((q) => q.startsWith(key));
        if (k) {
          g.push('<rect x="' + (x(mean) - 4) + '" y="' + (y(m[k]) - 4) + '" width="8" height="8" fill="' + color + '"><title>' + k + " " + num(m[k]) + "</title></rect>");
          legend.push('<span><span class="sw" style="background:' + color + '"></span>' + esc(k) + "</span>");
        }
      }
    }
    const acc = PROBLEMS.filter((p) => p.correct === true).length / n;
    g.push('<circle cx="' + x(mean) + '" cy="' + y(acc) + '" r="5" fill="none" stroke="#1d1f21" stroke-width="2"><title>accuracy ' + num(acc) + " at " + num(mean, 1) + " tokens per problem</title></circle>");
    legend.push('<span><span class="sw" style="border:2px solid #1d1f21;border-radius:50%"></span>the run: accuracy at its mean cost</span>');
    return (
      '<div class="card"><svg id="plot" width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + " " + H + '">' + g.join("") +
      '<path d="' + d + '" fill="none" stroke="#1c7ed6" stroke-width="2"/></svg><div id="legend-plot" class="toolbar">' + legend.join("") + "</div></div>"
    );
  }

  // ---------------------------------------------------------------------------------------------- a problem
  function problemView(i) {
    const p = PROBLEMS[i], d = detail(i);
    const tree = d.tree;
    let html = "<h2>" + verdictMark(p) + " " + esc(p.id) + "</h2>";
    html += '<div class="problem-text">' + esc(p.problem) + "</div>";
    const verdict = p.error ? '<span class="verdict-bad">not attempted</span>' : p.correct === true ? '<span class="verdict-ok">correct</span>' : p.correct === false ? '<span class="verdict-bad">wrong</span>' : "";
    html += '<div class="card kv">';
    html += "<div><span>answer</span><b class=\"mono\" id=\"answer\">" + esc(p.answer === null ? "none" : p.answer) + "</b> " + verdict + "</div>";
    html += "<div><span>reference</span><b class=\"mono\" id=\"reference\">" + esc(p.reference === null ? "none" : p.reference) + "</b></div>";
    html += "<div><span>generated tokens</span><b>" + p.tokens + "</b></div><div><span>prefill tokens</span><b>" + p.prefill + "</b></div>";
    html += "<div><span>seconds writing its steps</span><b>" + num(p.seconds) + "</b></div>";
    if (p.batch_s !== null) html += "<div><span>seconds (share of its batch)</span><b>" + num(p.batch_s) + "</b></div>";
    html += "<div><span>tree nodes</span><b>" + tree.nodes.length + "</b></div>";
    if (p.accept !== null) html += "<div><span>draft steps accepted</span><b>" + pct(p.accept) + " of " + p.spec_steps + "</b></div>";
    const counters = (d.stats && d.stats.counters) || {};
    for (const [k, v] of Object.entries(counters)) if (!k.startsWith("steps_")) html += "<div><span>" + esc(k.replace(/_/g, " ")) + "</span><b>" + num(v, Number.isInteger(v) ? 0 : 2) + "</b></div>";
    html += "</div>";
    if (p.error) html += '<p class="verdict-bad">' + esc(p.error) + "</p>";
    if (d.reason) html += '<p class="note">tests: ' + esc(d.reason) + "</p>";
    const roles = (d.stats && d.stats.roles) || {};
    if (Object.keys(roles).length) {
      html += '<h3>Cost by role</h3><table class="small"><tr><th>role</th><th>generated</th><th>prefill</th><th>prefix-cached</th></tr>';
      for (const [role, r] of Object.entries(roles))
        html += '<tr><td><span class="sw" style="background:' + roleColor(role) + '"></span>' + esc(role) + "</td><td>" + r.generated_tokens + "</td><td>" + r.prefill_tokens + "</td><td>" + (r.prefix_cached_tokens || 0) + "</td></tr>";
      html += "</table>";
    }
    if (d.candidates.length > 1) {
      html += '<h3>Candidates (' + d.candidates.length + ')</h3><table class="small"><tr><th>#</th><th>answer</th><th>score</th><th>finished</th><th>node</th></tr>';
      d.candidates.forEach((c, k) => {
        const chosen = c.leaf !== null && c.leaf === tree.chosen;
        html += "<tr" + (chosen ? ' class="b-chosen"' : "") + "><td>" + (k + 1) + '</td><td class="mono">' + esc(c.answer === null ? "none" : c.answer) + (c.passed !== undefined ? (c.passed ? " ✓" : " ✗") : "") + "</td><td>" + num(c.score) + "</td><td>" + (c.finished ? "yes" : "no") + "</td><td>" + (c.leaf === null ? "" : '<a href="#" data-goto="' + c.leaf + '">#' + c.leaf + "</a>") + (chosen ? " chosen" : "") + "</td></tr>";
      });
      html += "</table>";
    }
    if (tree.nodes.some((n) => n.speculation || n.phases)) html += '<h3>Timeline (step speculation)</h3><div class="toolbar"><label>trajectory <select id="traj"></select></label></div><div id="timeline"></div>';
    html += '<h3>Search tree</h3><div class="toolbar"><button id="expand">expand all</button><button id="fold">fold all but the chosen path</button><span class="note">' + tree.nodes.length + " nodes" + (tree.rebuilt ? " · rebuilt from the candidates (this run predates serialized trees: steps the search dropped are not shown)" : "") + "</span></div>";
    html += '<ul class="tree" id="tree"></ul>';
    return html;
  }

  function pathTo(nodes, leaf) {
    const out = [];
    for (let k = leaf; k !== null && k !== undefined; k = nodes[k].parent) out.push(k);
    return out.reverse();
  }

  function renderTree(i) {
    const d = detail(i), tree = d.tree, nodes = tree.nodes;
    const kids = nodes.map(() => []), roots = [];
    nodes.forEach((n, k) => (n.parent === null || n.parent === undefined ? roots : kids[n.parent]).push(k));
    const onPath = new Set(tree.chosen === null || tree.chosen === undefined ? [] : pathTo(nodes, tree.chosen));
    const cand = new Map();
    d.candidates.forEach((c, k) => c.leaf !== null && c.leaf !== undefined && cand.set(c.leaf, [k, c]));
    const threshold = INDEX.recipe && INDEX.recipe.step_speculation ? INDEX.recipe.step_speculation.threshold : null;
    const out = [];
    const node = (k) => {
      const n = nodes[k], notes = n.notes || {};
      const cls = ["node"];
      if (onPath.has(k)) cls.push("chosen-path");
      if (k === tree.chosen) cls.push("chosen");
      const badges = [];
      if (k === tree.chosen) badges.push('<span class="badge b-chosen">chosen · ' + esc(d.candidates.length ? "answer " + (PROBLEMS[i].answer === null ? "none" : PROBLEMS[i].answer) : "") + "</span>");
      else if (cand.has(k)) badges.push('<span class="badge b-cand">candidate ' + (cand.get(k)[0] + 1) + " · " + esc(cand.get(k)[1].answer === null ? "no answer" : cand.get(k)[1].answer) + "</span>");
      if (cand.has(k) && cand.get(k)[1].score !== null && cand.get(k)[1].score !== undefined) badges.push('<span class="badge b-cand">path score ' + num(cand.get(k)[1].score) + "</span>");
      if (notes.pruned) { cls.push("pruned"); badges.push('<span class="badge b-pruned">pruned (' + esc(notes.pruned) + ")</span>"); }
      if (notes.merged_into !== undefined) { cls.push("merged"); badges.push('<span class="badge b-merged">merged into <a href="#" data-goto="' + notes.merged_into + '">#' + notes.merged_into + "</a></span>"); }
      if (notes.rethought !== undefined && notes.rethought !== null) badges.push('<span class="badge b-merged"' + (notes.feedback ? ' title="rewritten from the execution feedback:\n' + esc(notes.feedback) + '"' : "") + ">" + (notes.feedback ? "rewrites" : "rethinks") + ' <a href="#" data-goto="' + notes.rethought + '">#' + notes.rethought + "</a>" + (notes.feedback ? " (feedback)" : "") + "</span>");
      if (n.terminal) badges.push('<span class="badge ' + (n.finish_reason === "length" ? "b-len" : "b-end") + '">end' + (n.finish_reason && n.finish_reason !== "stop" ? " · " + esc(n.finish_reason) : "") + "</span>");
      else if (!kids[k].length && !cand.has(k) && !notes.pruned && notes.merged_into === undefined) { cls.push("dropped"); badges.push('<span class="badge b-dropped" title="not kept by the search">dropped</span>'); }
      if (n.value !== undefined) badges.push('<span class="badge">value ' + num(n.value) + "</span>");
      if (n.visits) badges.push('<span class="badge">' + n.visits + " visits</span>");
      const scores = Object.entries(n.scores || {}).map(([name, v]) => '<span title="verifier ' + esc(name) + '">' + esc(name.replace(/^prm:/, "")) + " " + num(v) + "</span>").join("");
      let body = "";
      const sp = n.speculation;
      if (sp && !sp.accepted) {
        body =
          '<div class="spec rej"><span class="sv">✗ ' + esc(sp.acceptor) + " " + num(sp.score) + (threshold !== null ? " &lt; " + num(threshold, 2) : "") + ": the draft was rejected, the target rewrote it</span>" +
          '<div class="pair"><div class="rejected-draft"><span class="lbl">rejected draft' + (sp.draft_tokens !== undefined ? " · " + sp.draft_tokens + " tok" : "") + '</span><del>' + esc(sp.draft) + "</del></div>" +
          '<div class="rewrite"><span class="lbl">accepted rewrite (' + esc(n.source) + ")</span><span class=\"rw\">" + esc(n.text) + "</span></div></div></div>";
      } else {
        body = '<div class="nt">' + esc(n.text) + "</div>";
        if (sp) body += '<div class="spec ok">✓ accepted by ' + esc(sp.acceptor) + " · " + num(sp.score) + "</div>";
      }
      if (n.phases) body += '<div class="phases">' + ["draft", "judge", "rewrite"].filter((ph) => n.phases[ph] !== undefined).map((ph) => ph + " " + num(n.phases[ph]) + " s").join(" · ") + "</div>";
      out.push(
        '<div class="' + cls.join(" ") + '" data-node="' + k + '" id="node-' + k + '" style="--role:' + roleColor(n.source) + '"><div class="nh">' +
        (kids[k].length > 1 ? '<button class="tog" title="fold / unfold its branches">▾</button>' : '<span class="tog-sp"></span>') +
        '<span class="ni">#' + k + '</span><span class="role">' + esc(n.source) + "</span><span>" + (n.tokens === undefined ? "" : n.tokens + " tok") + "</span><span>" + num(n.seconds) + " s</span>" + scores + badges.join("") +
        "</div>" + body + "</div>"
      );
    };
    // a branch: one list item holding a chain of nodes (each the only child of the one above, drawn without
    // indenting, so a long chain of thought stays readable), then the branches of the chain's last node
    const branch = (k) => {
      out.push('<li class="tn' + (onPath.has(k) ? " on-path" : "") + '">');
      let cur = k;
      node(cur);
      while (kids[cur].length === 1) node((cur = kids[cur][0]));
      if (kids[cur].length) {
        out.push("<ul>");
        for (const c of kids[cur]) branch(c);
        out.push("</ul>");
      }
      out.push("</li>");
    };
    for (const r of roots) branch(r);
    const el = $("#tree");
    el.innerHTML = out.join("");
    if (nodes.length > 400) fold(true);
  }

  function fold(all) {
    for (const li of document.querySelectorAll("#tree li")) {
      const has = li.querySelector(":scope > ul");
      li.classList.toggle("collapsed", Boolean(all && has && !li.classList.contains("on-path")));
    }
  }

  function renderTimeline(i, leaf) {
    const d = detail(i), nodes = d.tree.nodes;
    const path = pathTo(nodes, leaf);
    const segs = path.map((k, s) => {
      const n = nodes[k];
      const ph = n.phases || { write: n.seconds || 0 };
      const parts = Object.entries(ph).map(([name, v]) => [name === "write" ? (n.source === "draft" ? "draft" : "rewrite") : name, v, name]);
      return { k, s: s + 1, n, parts, total: parts.reduce((a, p) => a + p[1], 0) };
    });
    const total = segs.reduce((a, g) => a + g.total, 0) || 1;
    const sums = { draft: 0, judge: 0, rewrite: 0 };
    let html = '<div class="timeline" style="--c-draft:' + roleColor("draft") + ";--c-target:" + roleColor("target") + '">';
    for (const g of segs) {
      const rej = g.n.speculation && !g.n.speculation.accepted;
      html += '<div class="tstep' + (rej ? " rej" : "") + '" style="width:' + ((100 * g.total) / total).toFixed(3) + '%" data-goto="' + g.k + '"><span class="tsn">' + g.s + "</span>";
      for (const [cls, v, name] of g.parts) {
        sums[cls] += v;
        const label = name === "write" ? g.n.source + " wrote it" : name;
        html += '<div class="seg seg-' + cls + '" data-goto="' + g.k + '" style="width:' + ((100 * v) / (g.total || 1)).toFixed(3) + '%" title="step ' + g.s + " (#" + g.k + "): " + esc(label) + " " + num(v) + ' s"></div>';
      }
      html += "</div>";
    }
    html += "</div>";
    html +=
      '<div class="totals"><span class="sw" style="background:' + roleColor("draft") + '"></span>draft ' + num(sums.draft) + ' s · <span class="sw" style="background:var(--judge)"></span>judge ' + num(sums.judge) +
      ' s · <span class="sw" style="background:' + roleColor("target") + '"></span>target writes ' + num(sums.rewrite) + " s · " + path.length + " steps, " +
      segs.filter((g) => g.n.speculation && !g.n.speculation.accepted).length + " rejected (red top edge) · the target's time: " + num(sums.judge + sums.rewrite) + " of " + num(total) + " s</div>";
    $("#timeline").innerHTML = html;
  }

  function openProblem(i) {
    current = i;
    const d = detail(i);
    $("#main").innerHTML = problemView(i);
    renderTree(i);
    const traj = $("#traj");
    if (traj) {
      const leaves = [];
      if (d.tree.chosen !== null && d.tree.chosen !== undefined) leaves.push([d.tree.chosen, "the chosen path"]);
      d.candidates.forEach((c, k) => c.leaf !== null && c.leaf !== d.tree.chosen && leaves.push([c.leaf, "candidate " + (k + 1) + " · " + (c.answer === null ? "no answer" : c.answer)]));
      if (!leaves.length && d.tree.nodes.length) leaves.push([d.tree.nodes.length - 1, "the last node"]);
      traj.innerHTML = leaves.map(([leaf, label]) => '<option value="' + leaf + '">' + esc(label) + "</option>").join("");
      traj.onchange = () => renderTimeline(i, Number(traj.value));
      if (leaves.length) renderTimeline(i, leaves[0][0]);
    }
    $("#expand").onclick = () => fold(false);
    $("#fold").onclick = () => fold(true);
    for (const tr of document.querySelectorAll("#list tr.item")) tr.classList.toggle("sel", Number(tr.dataset.i) === i);
    const row = $('#list tr[data-i="' + i + '"]');
    if (row && row.scrollIntoViewIfNeeded) row.scrollIntoViewIfNeeded();
    document.title = PROBLEMS[i].id + " · " + INDEX.title;
    document.body.dataset.problem = PROBLEMS[i].id;
  }

  function route() {
    let id = location.hash.slice(1);
    try {
      id = decodeURIComponent(id);
    } catch (e) {
      // a fragment that is not percent-encoding: taken as it is
    }
    if (id && BY_ID.has(id)) return openProblem(BY_ID.get(id));
    if (!id && !INDEX.summary && PROBLEMS.length === 1) return openProblem(0); // reasoner solve --html
    current = null;
    $("#main").innerHTML = (id ? '<p class="verdict-bad">No problem with the id ' + esc(id) + " in this run.</p>" : "") + summaryView();
    document.title = INDEX.title;
    delete document.body.dataset.problem;
    renderList();
  }

  // ---------------------------------------------------------------------------------------------- wiring
  document.addEventListener("click", (e) => {
    const tog = e.target.closest(".tog");
    if (tog) return tog.closest("li").classList.toggle("collapsed");
    const go = e.target.closest("[data-goto]");
    if (go) {
      e.preventDefault();
      const el = document.getElementById("node-" + go.dataset.goto);
      if (!el) return;
      for (let li = el.closest("li"); li; li = li.parentElement.closest("li")) li.classList.remove("collapsed");
      el.scrollIntoView({ block: "center" });
      el.classList.add("flash");
      setTimeout(() => el.classList.remove("flash"), 1200);
      return;
    }
    const row = e.target.closest("#list tr.item");
    if (row) location.hash = encodeURIComponent(PROBLEMS[Number(row.dataset.i)].id);
  });
  for (const id of ["q", "verdict", "amin", "amax", "sort"]) $("#" + id).addEventListener("input", () => { sortKey = $("#sort").value; renderList(); });
  $("#dir").addEventListener("click", () => { sortDesc = !sortDesc; $("#dir").textContent = sortDesc ? "↑" : "↓"; renderList(); });
  window.addEventListener("hashchange", route);
  const roles = new Set(PROBLEMS.flatMap((p) => Object.keys(p.role_tokens || {})));
  $("#legend").innerHTML = [...roles].map((r) => '<span><span class="sw" style="background:' + roleColor(r) + '"></span>' + esc(r) + "</span>").join("");
  renderList();
  route();
  document.body.dataset.readyMs = performance.now().toFixed(1); // since the navigation started: the tests read it
})();
