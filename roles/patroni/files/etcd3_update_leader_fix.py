#!/usr/bin/python3
"""Carries Patroni's upstream fix #2693 (released in 3.0.3) into Debian 12's Patroni 3.0.2.

In 3.0.2, etcd3's _update_leader() writes the leader key without any condition once its own
lease has expired and been granted anew. An old leader cut off from etcd for longer than ttl
comes back, renews its lease and overwrites the key that a new leader took meanwhile: the new
leader is demoted and every write it acknowledged is lost. The fix (as upstream) writes the key
only while it still holds our name, or when nobody holds it.

Exit 0: patched now (prints "patched"); 0 and prints nothing: nothing to do.
"""
import sys

PATH = sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/python3/dist-packages/patroni/dcs/etcd3.py"
MARK = "# hactl: upstream fix #2693"

OLD = """                try:
                    self._run_and_handle_exceptions(self._client.put, self.leader_path,
                                                    self._name, self._lease, retry=_retry)
                except ReturnFalseException:
                    pass
        return bool(self._lease)
"""

NEW = """                """ + MARK + """: only our own key, or no key at all.
                fields = {'key': base64_encode(self.leader_path), 'value': base64_encode(self._name),
                          'lease': self._lease}
                put = {'request_put': fields}
                ours = {'key': fields['key'], 'target': 'VALUE', 'value': fields['value']}
                nobodys = {'key': fields['key'], 'target': 'CREATE', 'create_revision': '0'}
                try:
                    if not (self._run_and_handle_exceptions(self._client.txn, ours, put, retry=_retry)
                            or self._run_and_handle_exceptions(self._client.txn, nobodys, put, retry=_retry)):
                        return False
                except ReturnFalseException:
                    return False
        return bool(self._lease)
"""

with open(PATH) as f:
    code = f.read()
if MARK in code:
    sys.exit(0)
if code.count(OLD) != 1 or "def txn(self, compare, success, retry=None)" not in code:
    sys.exit(0)  # another Patroni: upstream's own code is in place
with open(PATH + ".hactl-tmp", "w") as f:
    f.write(code.replace(OLD, NEW))
import os
os.replace(PATH + ".hactl-tmp", PATH)
print("patched")
