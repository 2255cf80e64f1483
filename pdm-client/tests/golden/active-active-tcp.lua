ifportup(443, {'5.1.2.3', '5.1.2.4', '5.5.6.7', '5.9.9.9'}, {selector='all', interval=1, timeout=1})
