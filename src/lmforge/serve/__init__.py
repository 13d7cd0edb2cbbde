"""HTTP services: the studio's JSON API and its built front end (`serve.studio`)."""
