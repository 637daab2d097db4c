"""The DR console: what an operator watches during an incident (the plugin's page under
``/dr/``, its JSON, and ``dr status``). It reads from every procedure, so it sits above them:
``sections`` collects the data, ``page`` renders it, ``charts`` draws the pictures as SVG."""
