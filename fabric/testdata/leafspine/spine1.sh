# romana fabric routes for device spine1 (spine): 6 route(s) (3 ECMP)
ip route replace 10.0.0.0/12 proto static via 172.16.0.1  # rack=r1 via tor1
ip route replace 10.16.0.0/12 proto static nexthop via 172.16.0.3 nexthop via 172.16.0.5  # rack=r2 via tor2a,tor2b
ip route replace 172.20.0.0/20 proto static via 172.16.0.1  # host h1 via tor1
ip route replace 172.20.16.0/20 proto static via 172.16.0.1  # host h2 via tor1
ip route replace 172.20.32.0/20 proto static nexthop via 172.16.0.3 nexthop via 172.16.0.5  # host h3 via tor2a,tor2b
ip route replace 172.20.48.0/20 proto static nexthop via 172.16.0.3 nexthop via 172.16.0.5  # host h4 via tor2a,tor2b
