"""The supervision dashboard (issue 16): `khazana dashboard` (cli.py), its server (server.py), the figures it reads from one node (figures.py), and the page (static/, Chart.js vendored)."""
