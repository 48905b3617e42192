import os


class Settings:
    """Settings read from a file of key = value lines, with defaults."""

    def __init__(self, path, defaults=None):
        self.path = path
        self.values = dict(defaults or {})
        if os.path.exists(path):
            self.load()

    def load(self):
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, _, value = line.partition("=")
                self.values[key.strip()] = value.strip()

    def get(self, key, default=None):
        return self.values.get(key, default)

    def save(self):
        with open(self.path, "w", encoding="utf-8") as f:
            for key, value in sorted(self.values.items()):
                f.write(f"{key} = {value}\n")
