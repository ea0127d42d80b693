"""The web UI under /ui/: Jinja2 page shells plus one small script that calls the same /v1 routes as any API
client (no second data path). Sessions and CSRF live in pipeline/ui/session.py."""
