"""The inspection agent: runs on the node, standard library only.

It never imports the plugin half (a test checks this), so that it runs in any image
with python3 >= 3.11: in the debug pod, in-process with ``--local``, or pasted as one
script. Its output is the record stream of :mod:`kubectl_crilinks.agent.records`.
"""

AGENT_VERSION = "0.1.0"
MIN_PYTHON = (3, 11)
