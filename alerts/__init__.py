"""Rule model, rule engine, alert lifecycle and notifications (issue: rule engine).

Empty in the walking skeleton: the pipeline already offers the hook the engine
will use (``gateway.pipeline.CommittedListener``).
"""
