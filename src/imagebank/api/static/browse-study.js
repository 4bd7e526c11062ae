// A study's page (decision 0028): a series whose thumbnail cannot be made (no image in it,
// such as a structured report) shows a placeholder saying so instead of a broken image.
"use strict";
(() => {
  function placeholder(img) {
    const box = document.createElement("div");
    box.className = "thumb placeholder";
    box.setAttribute("role", "img");
    box.setAttribute("aria-label", "No preview of this series");
    box.textContent = "No preview";
    img.replaceWith(box);
  }
  for (const img of document.querySelectorAll("img.thumb")) {
    if (img.complete && img.naturalWidth === 0) {  // failed before this ran
      placeholder(img);
    } else {
      img.addEventListener("error", () => placeholder(img), {once: true});
    }
  }
})();
