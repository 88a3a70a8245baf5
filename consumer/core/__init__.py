"""The pure domain core: event model, status rules, KPI arithmetic, delivery lifecycle.

Nothing here does I/O or imports other sendtrack packages; state reaches it through
the small `PartitionState` protocol in `state_view.py`.
"""
