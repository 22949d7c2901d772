// Where the page finds the API. "" is the page's own origin (make demo: Flask serves both).
// In production the web image rewrites this file from COVFEFE_API_BASE, e.g.
// "https://api.example.org" (the API then lists the page's origin in COVFEFE_CORS_ORIGINS).
window.COVFEFE_CONFIG = { apiBase: "" };
