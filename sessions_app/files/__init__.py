"""Files in a running session's home, through its agent (docs/architecture.md §23).

``/api/v1/sessions/<id>/files/<path>`` is a raw ASGI application (:mod:`.endpoint`) routed
ahead of Django, so that uploads and downloads stream with back-pressure instead of being
read whole: :mod:`.auth` decides who may do what with the API's own authentication classes,
:mod:`.agent` carries each request to the agent's file service over a ``files`` tunnel.
"""
