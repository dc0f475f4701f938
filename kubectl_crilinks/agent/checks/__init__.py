"""Checks: small functions that take the model and yield findings, one family a module.

A check never prints and never reads the disk behind the model's back except through
the layer stack or the host view, so each can be tested on a real runtime's state.
"""
