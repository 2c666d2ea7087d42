"""Static files of the operator console (index.html, app.css, icon.svg and the ES modules
app.js, charts.js, dom.js),
served by :mod:`n3xus.node.api.console` from the installed package: no CDN, no
build step, nothing fetched from anywhere but the node itself."""
