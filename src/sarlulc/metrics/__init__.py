"""`evaluate` metrics shipped with the package (loadable offline by path)."""
