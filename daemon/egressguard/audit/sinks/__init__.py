"""SIEM sinks: each ships the written audit log to one receiver with its own cursor.

`runner.SinkRunner` drives them; a sink only knows how to deliver one batch of rendered events
and to say (by returning) that its receiver has them. See README "Shipping to a SIEM".
"""
