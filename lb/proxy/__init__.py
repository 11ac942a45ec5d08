"""Proxy: the HTTP/1.1 data path on asyncio Protocols, uvloop and llhttp (httptools).

protocol.py (client side), exchange.py (one request and its response), upstream.py (pooled backend
connections) and headers.py (head rewriting).
"""
