/* The course's own page behaviour (issue 26): accessible names and scroll boxes a keyboard can reach.
   Registered in _config.yml (html_js_files). tests/test_accessibility.py runs axe-core (WCAG 2.1 A/AA) on every
   page at 1280 and 390 px; each rule below answers one of its findings on the theme's markup. */
"use strict";

/* WCAG 2.5.3 (label in name): a control's accessible name must contain its visible text. */
function courseLabelInName() {
  // myst-nb's folded cells: <summary aria-label="Toggle hidden content">Show code cell source</summary>.
  // Without the aria-label the visible words are the name.
  for (const summary of document.querySelectorAll("summary[aria-label]")) summary.removeAttribute("aria-label");
  // The theme's search field shows "Search Ctrl+K" and is named "Search": let the visible text name it.
  for (const button of document.querySelectorAll("button.search-button-field[aria-label]")) {
    button.removeAttribute("aria-label");
  }
  // The colour-mode button is named "Color mode"; the icons inside carry titles (Light, Dark, System Settings)
  // that count as its text. They are pictures of the current mode: hidden from assistive technology. Font
  // Awesome's script turns each <i title> into an <svg> with a <title> whenever it gets to it, so the button is
  // watched until then.
  for (const button of document.querySelectorAll(".theme-switch-button")) {
    courseHideIcons(button);
    new MutationObserver(() => courseHideIcons(button)).observe(button, {childList: true, subtree: true});
  }
}

function courseHideIcons(button) {
  for (const icon of button.querySelectorAll("i, svg")) {
    for (const title of icon.querySelectorAll("title")) title.remove();
    icon.removeAttribute("title");
    icon.removeAttribute("aria-labelledby");
    icon.removeAttribute("role");
    icon.setAttribute("aria-hidden", "true");
  }
}

/* A box that scrolls sideways must be reachable by keyboard (WCAG 2.1.1) and say what it holds. */
function courseScrollBox(box, label) {
  box.classList.add("course-scroll");
  box.setAttribute("tabindex", "0");
  box.setAttribute("role", "region");
  box.setAttribute("aria-label", label);
}

/* Tables printed as text, in cells tagged output-table (course.css keeps their lines whole). */
function courseTextTables() {
  for (const pre of document.querySelectorAll("article div.cell.tag_output-table div.cell_output pre")) {
    courseScrollBox(pre, "Table printed by the code above (scrolls sideways)");
  }
}

/* Tables printed by code cells get their own scroll box; their cells never wrap (CSS), so columns stay aligned. */
function courseTableBoxes() {
  for (const table of document.querySelectorAll("article div.cell_output table")) {
    if (table.parentElement.classList.contains("course-scroll")) continue;
    const box = document.createElement("div");
    table.parentElement.insertBefore(box, table);
    box.appendChild(table);
    const caption = table.querySelector("caption");
    courseScrollBox(box, (caption ? caption.innerText.trim() : "Table") + " (scrolls sideways)");
  }
}

/* Figures: the picture opens full size in its own tab (pinch to zoom on a phone); where the figure scrolls
   sideways on a narrow screen, the box is focusable and named. */
function courseFigures() {
  for (const figure of document.querySelectorAll("article figure")) {
    const image = figure.querySelector("img");
    if (!image) continue;
    if (!image.closest("a")) {
      const link = document.createElement("a");
      link.href = image.getAttribute("src");
      link.className = "course-full-size";
      image.parentElement.insertBefore(link, image);
      link.appendChild(image);
    }
    const caption = figure.querySelector("figcaption");
    const name = caption ? caption.innerText.trim().split("\n")[0] : (image.getAttribute("alt") || "Figure");
    if (figure.classList.contains("data-flow")) courseScrollBox(figure, name.slice(0, 120));
    if (caption && !figure.querySelector(".course-open-hint")) {
      const hint = document.createElement("a");
      hint.href = image.getAttribute("src");
      hint.className = "course-open-hint";
      hint.textContent = "Open the figure full size";
      caption.appendChild(hint);
    }
  }
}

/* Display equations that are wider than the column scroll in MathJax's box: focusable, named. */
function courseEquations() {
  for (const math of document.querySelectorAll("article div.math")) {
    if (math.scrollWidth > math.clientWidth + 1) courseScrollBox(math, "Equation (scrolls sideways)");
  }
}

/* Search finds numbers ("9216", the book's headline number). Sphinx's index keeps numeric words, but its search
   page (searchtools.js, Sphinx 7.4) drops every query word made only of digits before looking it up. This adds
   them back. It runs before the search page's own start-up: this file's DOMContentLoaded listener is registered
   first (html_js_files come before searchtools.js on the page). */
function courseSearchNumbers() {
  if (typeof Search === "undefined" || typeof Search._parseQuery !== "function" || Search.courseNumbers) return;
  const parseQuery = Search._parseQuery;
  Search._parseQuery = (query) => {
    const parsed = parseQuery(query);
    const [, searchTerms, , highlightTerms] = parsed;
    for (const word of splitQuery(query.trim())) {
      if (/^\d+$/.test(word)) {
        searchTerms.add(word);
        highlightTerms.add(word);
      }
    }
    return parsed;
  };
  Search.courseNumbers = true;
}

document.addEventListener("DOMContentLoaded", () => {
  courseSearchNumbers();
  courseLabelInName();
  courseTableBoxes();
  courseTextTables();
  courseFigures();
});
/* MathJax typesets after the page loads; the equations are measured when it is done. */
window.addEventListener("load", () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(courseEquations);
  } else {
    courseEquations();
  }
});
