"""The ``capstan`` command and the API client it uses."""
