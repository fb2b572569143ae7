"""Bearer-token checking: local HS256, IdP JWTs via JWKS, opaque tokens via introspection."""
