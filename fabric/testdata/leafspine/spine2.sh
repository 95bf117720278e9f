# romana fabric routes for device spine2 (spine): 3 route(s)
ip route replace 10.0.0.0/12 proto static via 172.16.1.1  # rack=r1 via tor1
ip route replace 172.20.0.0/20 proto static via 172.16.1.1  # host h1 via tor1
ip route replace 172.20.16.0/20 proto static via 172.16.1.1  # host h2 via tor1
