// Where the page finds the API. "" is the page's own origin (make demo: Flask serves both).
// In production the web image serves its own /config.js, written from COVFEFE_API_BASE by
// deploy/web/entrypoint.sh, e.g.
// "https://api.example.org" (the API then lists the page's origin in COVFEFE_CORS_ORIGINS).
window.COVFEFE_CONFIG = { apiBase: "" };
