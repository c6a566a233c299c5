"""run() uses the standard streams as libraries do: print, the bytes buffer, the encoding, the fd."""
import faulthandler
import subprocess
import sys


def init():
    faulthandler.enable()  # asks sys.stderr for its fd


def run(raw_data):
    print("printed by run()")
    sys.stdout.buffer.write(b"bytes by run()\n")
    sys.stdout.buffer.flush()
    subprocess.run([sys.executable, "-c", "print('from a child')"], stdout=sys.stdout, check=True)
    return {"encoding": sys.stdout.encoding.lower()}
