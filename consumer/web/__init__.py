"""The Deployment view: what campaign users see and do, served by every instance on its HTTP port.

`WebApp` (app.py) is the `consumer.ops.exchange.Handler`; it reads the KPI view (kpi_view.py), routes
message-level questions to the partition's owner (owners.py, owner_state.py), identifies users (auth.py,
csrf.py) and publishes their actions (actions.py); pages.py, templates/ and static/ are what they see.
"""
