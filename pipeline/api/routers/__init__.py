"""One router per resource: health (+ /metrics), faces (identify/verify), gallery, events, cameras."""
