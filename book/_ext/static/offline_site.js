// The sidebar toggles. pydata-sphinx-theme binds its handlers (open the navigation dialog on a
// phone, and sphinx-book-theme's collapse on a wide screen) to the FIRST `.primary-toggle` and
// `.secondary-toggle` in the page, which under sphinx-book-theme is a hidden duplicate in an
// unused header. The buttons a reader sees forward their clicks to that bound one.
document.addEventListener("DOMContentLoaded", () => {
  for (const selector of [".primary-toggle", ".secondary-toggle"]) {
    const [bound, ...visible] = document.querySelectorAll(selector);
    for (const button of visible) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        bound.click();
      });
    }
  }
});
