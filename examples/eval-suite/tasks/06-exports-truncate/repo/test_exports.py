import inspect
import unittest

import textutils


class ExportsTest(unittest.TestCase):
    def test_public_functions_match_all(self):
        public = [n for n, f in inspect.getmembers(textutils, inspect.isfunction) if not n.startswith("_")]
        self.assertEqual(sorted(public), sorted(textutils.__all__))
