"""Test helpers shared by the suites: real servers and guards, never mocks."""
