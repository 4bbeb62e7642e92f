"""The load generator behind `scripts/bench.py`, in pieces a test can use one at a time.

`rpc`: pipelined keep-alive JSON-RPC lanes (open-loop submission) and the NewBlock watcher;
`funding`: onboarding and funding the senders through the SDK; `measure`: the signature bound,
/proc figures, disk size, percentiles and the chart. Scripts are not installed: `bench.py`
puts `scripts/` and the checkout root on `sys.path` so `import benchlib` works from a checkout.
"""
