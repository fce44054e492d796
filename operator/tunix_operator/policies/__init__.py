"""The TunixRun state machine, one policy per module (as JobSet splits its controller).

``draft`` holds what a decision is made of (the run parsed once, the observation, the status being
written, actions, events); each other module is one policy acting on a :class:`draft.Draft`:
``attempts`` (creating attempts, their history), ``retries`` (failures and preemptions), ``suspend``,
``deadline``, ``ttl``, ``stall``, ``running`` (progress and the live checkpoint), ``success``,
``benchmark_result``, ``terminal`` (failing and completing), ``goodput`` (pure accounting), and
``machine`` composes them into ``decide``. ``tunix_operator.state`` is the public face.
"""
