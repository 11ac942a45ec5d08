"""Which route a request takes: rules (`rules.py`), service labels (`labels.py`), the table the proxy
looks requests up in (`table.py`), the Route unit (`route.py`), and the watcher that keeps routes equal
to the labelled services (`watch.py`)."""
