"""The tenant portal: server-rendered pages at ``/portal`` on the API's own services."""
