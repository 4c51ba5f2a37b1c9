// Sort a table by the header clicked (again: the other way). Numbers sort as numbers, units included
// ("1.5 GiB", "$1.31", "2.4 s", "3x"); a dash (not measured) sorts last either way.
(function () {
  "use strict";
  var UNITS = { "": 1, B: 1, KiB: 1024, MiB: 1048576, GiB: 1073741824, TiB: 1099511627776, s: 1, x: 1, "%": 1 };
  function value(text) {
    var match = /^\$?(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|TiB|s|x|%)?$/.exec(text.trim());
    return match ? parseFloat(match[1].replace(/,/g, "")) * UNITS[match[2] || ""] : null;
  }
  function missing(text) { return text.trim() === "-" || text.trim() === ""; }
  function sortBy(table, column, header) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var rows = Array.prototype.slice.call(body.rows);
    var cells = rows.map(function (row) { return row.cells[column] ? row.cells[column].textContent : ""; });
    var numeric = cells.every(function (text) { return missing(text) || value(text) !== null; });
    var descending = header.getAttribute("aria-sort") === "ascending";
    var order = rows.map(function (row, index) { return index; });
    order.sort(function (a, b) {
      var x = cells[a], y = cells[b];
      if (missing(x) || missing(y)) { return missing(x) - missing(y) || a - b; }
      var diff = numeric ? value(x) - value(y) : x.localeCompare(y, undefined, { numeric: true });
      return (descending ? -diff : diff) || a - b;
    });
    order.forEach(function (index) { body.appendChild(rows[index]); });
    Array.prototype.forEach.call(header.parentNode.cells, function (cell) { cell.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table"), function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      header.title = "sort by this column";
      header.addEventListener("click", function () { sortBy(table, column, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, column, header); }
      });
    });
  });
}());
