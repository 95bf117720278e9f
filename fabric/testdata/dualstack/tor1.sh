# romana fabric routes for device tor1 (tor, group rack=r1): 6 route(s)
ip route replace 10.0.0.0/8 proto static via 172.16.0.0  # pool pods via spine1
ip route replace 10.0.0.0/16 proto static via 192.168.1.11  # host h1
ip route replace 10.1.0.0/16 proto static via 192.168.1.12  # host h2
ip route replace fd00:1234:5678::/48 proto static via fd00:ff::  # pool pods6 via spine1
ip route replace fd00:1234:5678::/64 proto static via fd00:1::11  # host h1
ip route replace fd00:1234:5678:1::/64 proto static via fd00:1::12  # host h2
