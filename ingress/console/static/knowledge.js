// The Knowledge pages' script (no inline script: the CSP forbids it). It follows ingestion jobs live by polling
// jobs.json while any shown job is queued or running, and reloads the page when one ends (its document list
// changed); and it asks before a form marked data-confirm (removing a document) is sent.
"use strict";

wabot.ready(() => {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  const box = document.getElementById("jobs");
  if (!box) return;
  const active = (status) => status === "queued" || status === "running";
  const watching = new Set([...box.querySelectorAll("tr[data-job]")]
    .filter((row) => active(row.dataset.status)).map((row) => Number(row.dataset.job)));
  if (!watching.size) return;

  function show(row, job) {
    row.dataset.status = job.status;
    const badge = row.querySelector(".job-status");
    badge.textContent = job.status;
    badge.className = "badge job-status " + job.status;
    const bar = row.querySelector("progress");
    bar.max = job.chunks_total || 1;
    bar.value = job.chunks_done || 0;
    row.querySelector(".chunks").textContent =
      (job.chunks_done || 0) + "/" + (job.chunks_total === null ? "?" : job.chunks_total);
    row.querySelector(".job-error").textContent = job.error || job.result || "";
  }

  function reload() {
    if (window.location.pathname === box.dataset.pageUrl) window.location.reload();
    else window.location.assign(box.dataset.pageUrl);  // after a refused POST: never send the form again
  }

  const stop = wabot.poll(async () => {
    const response = await wabot.call(box.dataset.jobsUrl);
    if (!response.ok) return;
    const data = await response.json();
    let ended = false;
    for (const job of data.jobs) {
      const row = box.querySelector(`tr[data-job="${job.id}"]`);
      if (row) show(row, job);
      if (watching.has(job.id) && !active(job.status)) ended = true;
    }
    if (ended) { stop(); reload(); }
  }, 1000);
});
