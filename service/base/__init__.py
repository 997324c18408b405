"""The ground floor: settings, the definitions of every metric and log line, background
repetition, one timer for many deadlines, and reading an ASGI scope.

Imports nothing of the service: every other package may import it.
"""
