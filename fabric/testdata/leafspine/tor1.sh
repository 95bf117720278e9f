# romana fabric routes for device tor1 (tor, group rack=r1): 6 route(s) (2 ECMP)
ip route replace 10.0.0.0/8 proto static nexthop via 172.16.0.0 nexthop via 172.16.1.0  # pool pods via spine1,spine2
ip route replace 10.0.0.0/16 proto static via 192.168.1.11  # host h1
ip route replace 10.1.0.0/16 proto static via 192.168.1.12  # host h2
ip route replace 172.20.0.0/16 proto static nexthop via 172.16.0.0 nexthop via 172.16.1.0  # pool flat via spine1,spine2
ip route replace 172.20.0.0/20 proto static via 192.168.1.11  # host h1
ip route replace 172.20.16.0/20 proto static via 192.168.1.12  # host h2
