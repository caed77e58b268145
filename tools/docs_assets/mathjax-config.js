// MathJax 3 (a local copy, SVG output: no web fonts to load) typesets the notebooks' $...$ and $$...$$; code and outputs in
// <pre>/<code> are left alone by MathJax's defaults.
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']], processEscapes: true},
  svg: {fontCache: 'global'},
  options: {enableMenu: false},
};
