# romana fabric routes for device spine1 (spine): 4 route(s)
ip route replace 10.0.0.0/12 proto static via 172.16.0.1  # rack=r1 via tor1
ip route replace 10.16.0.0/12 proto static via 172.16.0.3  # rack=r2 via tor2
ip route replace fd00:1234:5678::/52 proto static via fd00:ff::1  # rack=r1 via tor1
ip route replace fd00:1234:5678:1000::/52 proto static via fd00:ff::3  # rack=r2 via tor2
