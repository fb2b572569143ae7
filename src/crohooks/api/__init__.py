"""HTTP routes per resource, and the wire rules every response follows."""
