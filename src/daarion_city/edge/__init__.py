"""The HTTP/WebSocket edge: what stands between the server's sockets and the app's routes.

- ``server``: uvicorn with the service's options, and the graceful shutdown (1001 for sockets);
- ``head``: the request head's limits (size, count, time), in uvicorn's httptools protocol;
- ``protocol``: the server's WebSocket protocol class (light per socket, a close that does not
  wait for the peer);
- ``headers``: the security headers of every answer;
- ``front``: what the server calls: the socket lane, then the HTTP middleware (``middleware``:
  request ids, body limits, metrics, the access log), CORS, the post lane, then FastAPI;
- ``lanes``: the fast lanes (room and presence sockets, posting a message), which serve what
  the routes would, with the routes' paths, authentication and error answers.

The edge is the top layer below the app's wiring (``app``, ``cli``): it may import the domains
and ``realtime``; nothing below imports it.
"""
