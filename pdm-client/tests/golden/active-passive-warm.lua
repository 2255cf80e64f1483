ifurlup('https://probe.example.com/healthz', {{'5.1.2.3', '5.1.2.4'}, {'5.5.6.7'}}, {selector='all', interval=5, timeout=2})
