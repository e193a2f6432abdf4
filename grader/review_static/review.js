// The review page: score free-response answers question by question. Plain JavaScript, no
// build step. Student text arrives from the server already sanitized; it is shown with
// innerHTML only in #answer, #context and #modeltext, and the page's CSP forbids any script
// but this file.
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  const $ = (id) => document.getElementById(id);
  let state = null;
  let qi = 0; // current question
  let si = 0; // current student

  async function api(path, body) {
    const opts = { headers: { "X-Grader-Token": token } };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    let data = {};
    try { data = await res.json(); } catch (e) { data = { error: "the server sent no JSON" }; }
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }

  function question() { return state.questions[qi]; }
  function student() { return state.students[si]; }
  function answer() { return student().answers[question().id]; }

  function text(el, value) { el.textContent = value; }

  function progress() {
    const q = question();
    const graded = state.students.filter((s) => s.answers[q.id].state === "graded").length;
    let all = 0;
    for (const s of state.students) for (const id in s.answers) if (s.answers[id].state === "graded") all++;
    const total = state.students.length * state.questions.length;
    text($("progress"), `${q.id}: ${graded} of ${state.students.length} graded · all questions: ${all} of ${total}`);
  }

  function renderQuestions() {
    const nav = $("questions");
    nav.replaceChildren();
    state.questions.forEach((q, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = q.id;
      b.title = q.title;
      if (i === qi) b.className = "current";
      b.addEventListener("click", () => { qi = i; si = 0; render(); });
      nav.appendChild(b);
    });
  }

  function renderStudents() {
    const list = $("students");
    list.replaceChildren();
    state.students.forEach((s, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = s.student;
      b.className = s.answers[question().id].state + (i === si ? " current" : "");
      b.addEventListener("click", () => { si = i; render(); });
      list.appendChild(b);
    });
  }

  function render() {
    if (!state.questions.length || !state.students.length) {
      text($("error"), "Nothing to review: no free-response questions or no graded submissions.");
      $("error").hidden = false;
      return;
    }
    const q = question(), s = student(), a = answer();
    $("card").hidden = false;
    text($("qtitle"), `${q.id}: ${q.title}`);
    $("modeltext").innerHTML = q.model || "<p>(no model answer in the source)</p>";
    text($("sname"), s.student);
    text($("sindex"), `(${si + 1} of ${state.students.length})`);
    text($("sstate"), a.state === "review-again" ? "answer changed: review again" : a.state);
    $("context").innerHTML = a.context;
    $("answer").innerHTML = a.html;
    $("before").hidden = !a.before;
    if (a.before) text($("before"), `Scored before the answer changed: ${a.before.points ?? "no points"}` + (a.before.comment ? `, comment: ${a.before.comment}` : ""));
    text($("max"), String(q.max));
    $("points").value = a.points === null ? "" : String(a.points);
    $("points").classList.remove("bad");
    $("comment").value = a.comment;
    text($("status"), a.updated_at ? `saved ${a.updated_at}` : "");
    $("status").className = "";
    renderQuestions();
    renderStudents();
    progress();
  }

  async function save(fields) {
    const q = question(), s = student(), a = answer();
    const body = Object.assign({ student: s.student, question: q.id, answer_hash: a.hash }, fields);
    text($("status"), "saving…");
    $("status").className = "";
    try {
      const res = await api("/api/score", body);
      Object.assign(a, res.saved);
      a.state = a.points === null ? "ungraded" : "graded";
      a.before = null;
      $("points").classList.remove("bad");
      text($("status"), "saved ✓");
      $("status").className = "ok";
      renderStudents();
      text($("sstate"), a.state);
      progress();
      return true;
    } catch (err) {
      text($("status"), "not saved: " + err.message);
      $("status").className = "bad";
      if ("points" in fields) $("points").classList.add("bad");
      return false;
    }
  }

  function go(step) {
    si = (si + step + state.students.length) % state.students.length;
    render();
  }

  function nextUngraded() {
    const n = state.students.length;
    for (let k = 1; k <= n; k++) {
      const i = (si + k) % n;
      if (state.students[i].answers[question().id].state !== "graded") { si = i; render(); return; }
    }
    for (let j = 1; j <= state.questions.length; j++) { // this question is done: the next one
      const qj = (qi + j) % state.questions.length;
      const i = state.students.findIndex((s) => s.answers[state.questions[qj].id].state !== "graded");
      if (i >= 0) { qi = qj; si = i; render(); return; }
    }
    text($("status"), "everything is graded");
  }

  $("points").addEventListener("change", () => save({ points: $("points").value.trim() || null }));
  $("points").addEventListener("keydown", async (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      if (await save({ points: $("points").value.trim() || null })) go(1);
    }
  });
  $("comment").addEventListener("change", () => save({ comment: $("comment").value }));
  $("export").addEventListener("click", async () => {
    try {
      const res = await api("/api/export", {});
      text($("status"), `exported ${res.exported} students to ${res.out}`);
      $("status").className = "ok";
    } catch (err) {
      text($("status"), "export failed: " + err.message);
      $("status").className = "bad";
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (!state) return;
    const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement;
    if (ev.altKey && ev.key === "ArrowRight") { ev.preventDefault(); document.activeElement.blur(); go(1); }
    else if (ev.altKey && ev.key === "ArrowLeft") { ev.preventDefault(); document.activeElement.blur(); go(-1); }
    else if (ev.altKey && (ev.key === "u" || ev.key === "U")) { ev.preventDefault(); nextUngraded(); }
    else if (!typing && (ev.key === "j" || ev.key === "ArrowRight")) go(1);
    else if (!typing && (ev.key === "k" || ev.key === "ArrowLeft")) go(-1);
    else if (!typing && ev.key === "u") nextUngraded();
  });

  api("/api/state").then((data) => {
    state = data;
    text($("title"), `${data.title}: free-response review`);
    render();
  }).catch((err) => { text($("error"), "cannot load: " + err.message); $("error").hidden = false; });
})();
