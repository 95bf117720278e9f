# romana fabric routes for device tor2 (tor, group rack=r2): 6 route(s)
ip route replace 10.0.0.0/8 proto static via 172.16.0.2  # pool pods via spine1
ip route replace 10.16.0.0/16 proto static via 192.168.2.13  # host h3
ip route replace 10.17.0.0/16 proto static via 192.168.2.14  # host h4
ip route replace fd00:1234:5678::/48 proto static via fd00:ff::2  # pool pods6 via spine1
ip route replace fd00:1234:5678:1000::/64 proto static via fd00:2::13  # host h3
ip route replace fd00:1234:5678:1001::/64 proto static via fd00:2::14  # host h4
